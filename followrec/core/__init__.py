"""The core: config, errors, atomic writes, run-folder layout, ranking metrics and
exclusion-aware search. Imports nothing else of the project."""
