"""followrec: model-based 'who to follow' candidate generation."""

__version__ = "0.1.0"
