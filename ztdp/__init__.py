"""ZTDP, the Zero Touch Developer Platform: declared intent in, plans and real resources out."""

__version__ = "0.1.0"
