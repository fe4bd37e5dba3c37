"""Keras layers provided by tfprune."""
