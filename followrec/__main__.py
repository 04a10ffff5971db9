"""`python -m followrec` runs the CLI."""

import sys

from followrec.cli import main

sys.exit(main())
