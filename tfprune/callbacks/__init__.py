"""Keras callbacks provided by tfprune."""
