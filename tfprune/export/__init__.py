"""Export to TFLite/LiteRT, check the file against Keras, and time it.

`to_tflite` strips tfprune's training-time layers, converts the plain model
with TensorFlow's TFLite converter, writes the file atomically, runs it in the
LiteRT interpreter (`ai_edge_litert`) on sample inputs and reports how far its
outputs are from the Keras model's. Models with several inputs (token ids, a
padding mask, ...) get one file input per model input, with the same name;
sizes the model leaves unknown stay dynamic in the file. `predict` runs any
`.tflite` file on NumPy inputs (one array, or a dict input name -> array;
quantizing and dequantizing integer inputs and outputs), and `benchmark`
measures its latency and memory; `compare_latency` times several files with
their invocations interleaved.

The package has one module per step: `inputs` (a model's inputs by name and
the data fed to them), `convert` (Keras model -> `.tflite` file), `legalize`
(rewrites of the traced graph into ops the converter lowers to LiteRT
built-ins, and the reason for the ops it cannot), `verify`
(running a file in the interpreter and comparing it with Keras), `measure`
(latency and memory) and `report` (the dataclasses the public functions
return).
"""

from tfprune.export.convert import (
    MAX_CALIBRATION_SAMPLES,
    MAX_VERIFICATION_SAMPLES,
    QUANTIZERS,
    RANDOM_SAMPLES,
    to_tflite,
)
from tfprune.export.measure import benchmark, compare_latency
from tfprune.export.report import BenchmarkReport, ExportReport
from tfprune.export.verify import predict

__all__ = [
    "BenchmarkReport",
    "ExportReport",
    "MAX_CALIBRATION_SAMPLES",
    "MAX_VERIFICATION_SAMPLES",
    "QUANTIZERS",
    "RANDOM_SAMPLES",
    "benchmark",
    "compare_latency",
    "predict",
    "to_tflite",
]
