"""Benchmarks: run by hand (`make bench`), never in CI; results in RESULTS.md.

Every number in RESULTS.md is measured on TensorFlow (the LiteRT converter's
backend), whatever ~/.keras/keras.json says, unless KERAS_BACKEND is set.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
