"""Join runners' watch files to where their pain starts."""

__version__ = "0.1.0"
