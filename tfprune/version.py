"""The single source of tfprune's version."""

__version__ = "0.1.0"
