"""fdffd: turns donated USB drives into clean, verified carriers of curated content."""

__version__ = "0.1.0"
