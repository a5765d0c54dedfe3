"""uld: universal lesion detection on CT that learns from incomplete annotations."""

__version__ = "0.4.0"
