"""The package version, importable from the bottom layer (llara/__init__ re-exports it)."""

__version__ = "0.1.0"
