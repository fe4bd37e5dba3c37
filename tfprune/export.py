"""Export to TFLite/LiteRT, check the file against Keras, and time it.

`to_tflite` strips tfprune's training-time layers, converts the plain model
with TensorFlow's TFLite converter, writes the file atomically, runs it in the
LiteRT interpreter (`ai_edge_litert`) on sample inputs and reports how far its
outputs are from the Keras model's. `predict` runs any `.tflite` file on NumPy
inputs (quantizing and dequantizing integer inputs and outputs), and
`benchmark` measures its latency and memory.

Conversion follows Keras's own LiteRT path (`keras.export.ExportArchive` to a
SavedModel, then `tf.lite.TFLiteConverter.from_saved_model`, as in
`keras/src/export/litert.py`) but restricts the converter to TFLite built-in
ops: Keras's `model.export(format="litert")` also allows Flex (TensorFlow)
ops, which the plain LiteRT runtime on a phone cannot run. Converting from one
SavedModel also lets `sparse=True` convert twice to report the size gained by
the sparsity encoding.
"""

import dataclasses
import gzip
import os
import re
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tfprune._utils import atomic_path, require_graph_model
from tfprune.sparsity import strip

# TensorFlow's guide recommends a few hundred calibration samples; more only
# slows the conversion down.
MAX_CALIBRATION_SAMPLES = 256
# Verification samples taken at most from a tf.data.Dataset (it may repeat forever).
MAX_VERIFICATION_SAMPLES = 4096
# Verification inputs when neither `sample_inputs` nor `representative_data` is given.
RANDOM_SAMPLES = 16


def _float_weights(converter):
    pass  # the converter's default: float32 weights and activations


def _dynamic_range(converter):
    converter.optimizations.append(tf.lite.Optimize.DEFAULT)


def _float16_weights(converter):
    converter.optimizations.append(tf.lite.Optimize.DEFAULT)
    converter.target_spec.supported_types = [tf.float16]


def _full_integer(converter):
    # Every op runs in int8; input and output stay float32 (the converter adds
    # QUANTIZE/DEQUANTIZE at the ends) so the file is a drop-in replacement for
    # the float model. The caller sets `representative_dataset`.
    converter.optimizations.append(tf.lite.Optimize.DEFAULT)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


# `quantize` argument -> function that configures a TFLiteConverter.
QUANTIZERS = {
    None: _float_weights,
    "dynamic": _dynamic_range,
    "float16": _float16_weights,
    "int8": _full_integer,
}


def _format_bytes(size):
    return f"{size / 1024:.1f} KiB"


def _format_table(title, rows):
    width = max(len(name) for name, _ in rows)
    return "\n".join([title] + [f"  {name.ljust(width)}  {value}" for name, value in rows])


@dataclasses.dataclass
class ExportReport:
    """What `to_tflite` wrote and how closely the file matches the Keras model.

    Args:
        path: String. The `.tflite` file written.
        quantize: The `quantize` mode used (None, "dynamic", "float16", "int8").
        sparse: Bool. Whether the converter's sparsity encoding was on.
        size_bytes: Int. Size of the file.
        gzip_size_bytes: Int. Size of the file compressed with gzip (level 9),
            a proxy for the download size of an app.
        ops: Dict. TFLite op name -> number of nodes using it.
        inputs: List of dicts (`name`, `shape`, `dtype`, `scale`, `zero_point`)
            describing the file's input tensors; `shape` has -1 for dynamic
            dimensions.
        outputs: List of dicts describing the output tensors, same fields.
        dense_size_bytes: Int or None. With `sparse=True`, the size of the same
            conversion without the sparsity encoding.
        max_abs_error: Float or None. Largest absolute difference between the
            LiteRT outputs and the Keras model's on the verification samples
            (None when `verify=False`).
        top1_agreement: Float or None. Fraction of verification samples whose
            arg-max class agrees between LiteRT and Keras, for outputs of shape
            `(batch, classes)` (the lowest over such outputs); None otherwise.
        num_samples: Int. Number of verification samples.
        xnnpack: Bool or None. Whether the file runs with LiteRT's default
            XNNPACK delegate; if it does not (e.g. sparse quantized weights),
            verification used the built-in kernels.

    Example:

    >>> report = tfprune.export.to_tflite(model, "model.tflite")  # doctest: +SKIP
    >>> report.size_bytes, report.max_abs_error  # doctest: +SKIP
    (14488, 7.4e-09)
    >>> print(report)  # doctest: +SKIP
    """

    path: str
    quantize: str | None
    sparse: bool
    size_bytes: int
    gzip_size_bytes: int
    ops: dict
    inputs: list
    outputs: list
    dense_size_bytes: int | None = None
    max_abs_error: float | None = None
    top1_agreement: float | None = None
    num_samples: int = 0
    xnnpack: bool | None = None

    def to_dict(self):
        """Returns the report as a dict of JSON-compatible values.

        Returns:
            Dict with one entry per field (nested dicts and lists for the
            tensors, ops and latencies); `json.dumps` accepts it as it is.

        Example:

        >>> json.dumps(report.to_dict())  # doctest: +SKIP
        """
        return dataclasses.asdict(self)

    def __str__(self):
        rows = [
            ("quantize", self.quantize or "none (float32)"),
            (
                "size",
                f"{_format_bytes(self.size_bytes)} (gzip {_format_bytes(self.gzip_size_bytes)})",
            ),
        ]
        if self.dense_size_bytes is not None:
            gain = self.dense_size_bytes / self.size_bytes
            rows.append(
                (
                    "sparse encoding",
                    f"{gain:.2f}x smaller than {_format_bytes(self.dense_size_bytes)}",
                )
            )
        if self.max_abs_error is not None:
            rows.append(
                ("max abs error", f"{self.max_abs_error:.3g} on {self.num_samples} samples")
            )
        if self.top1_agreement is not None:
            rows.append(("top-1 agreement", f"{100 * self.top1_agreement:.2f} %"))
        if self.xnnpack is not None:
            rows.append(("XNNPACK", "yes" if self.xnnpack else "no (built-in kernels)"))
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            for tensor in tensors:
                rows.append((kind, f"{tensor['name']} {tensor['shape']} {tensor['dtype']}"))
        rows.append(("ops", ", ".join(f"{name} x{count}" for name, count in self.ops.items())))
        return _format_table(f"TFLite file {self.path}", rows)


@dataclasses.dataclass
class BenchmarkReport:
    """LiteRT latency and memory of one `.tflite` file, from `benchmark`.

    Args:
        path: String. The file measured.
        delegate: String. "xnnpack" (LiteRT's default CPU delegate) or
            "builtin" when the file cannot run with XNNPACK.
        input_shapes: List of lists. Shapes fed to the interpreter (dynamic
            dimensions set to 1).
        runs: Int. Timed invocations per thread count.
        warmup: Int. Untimed invocations before timing.
        latency: List of dicts, one per thread count: `threads`, `median_ms`,
            `min_ms`, `max_ms`.
        peak_rss_bytes: Int or None. Peak resident memory of a fresh Python
            process that loaded the interpreter and ran the model once (Linux
            only; None elsewhere).
        model_rss_bytes: Int or None. The part of that peak added by loading
            and running the model (peak minus the resident memory after importing
            `ai_edge_litert`).

    Example:

    >>> report = tfprune.export.benchmark("model.tflite", threads=(1,))  # doctest: +SKIP
    >>> report.latency[0]["median_ms"]  # doctest: +SKIP
    0.05
    """

    path: str
    delegate: str
    input_shapes: list
    runs: int
    warmup: int
    latency: list
    peak_rss_bytes: int | None = None
    model_rss_bytes: int | None = None

    def to_dict(self):
        """Returns the report as a dict of JSON-compatible values.

        Returns:
            Dict with one entry per field (nested dicts and lists for the
            tensors, ops and latencies); `json.dumps` accepts it as it is.

        Example:

        >>> json.dumps(report.to_dict())  # doctest: +SKIP
        """
        return dataclasses.asdict(self)

    def __str__(self):
        rows = [("delegate", self.delegate), ("input shapes", str(self.input_shapes))]
        for entry in self.latency:
            rows.append(
                (
                    f"{entry['threads']} thread(s)",
                    f"median {entry['median_ms']:.3f} ms, min {entry['min_ms']:.3f} ms, "
                    f"max {entry['max_ms']:.3f} ms ({self.runs} runs)",
                )
            )
        if self.peak_rss_bytes is not None:
            rows.append(
                (
                    "peak memory",
                    f"{self.peak_rss_bytes / 2**20:.1f} MiB "
                    f"(model: {self.model_rss_bytes / 2**20:.1f} MiB)",
                )
            )
        return _format_table(f"LiteRT benchmark {self.path}", rows)


def to_tflite(
    model,
    path,
    quantize=None,
    representative_data=None,
    sparse=False,
    verify=True,
    overwrite=True,
    sample_inputs=None,
):
    """Converts a Keras model to a TFLite/LiteRT file and checks it in the interpreter.

    tfprune's training-time layers are stripped first (`tfprune.strip`), so an
    STR or mask-wrapped model exports as plain Keras layers with its zeros
    baked in; a mixed-precision model is exported in float32 (TFLite lacks
    float16 kernels; use `quantize="float16"` for half-size weights). Only TFLite built-in ops are allowed, so the file runs on the
    plain LiteRT runtime of a phone. The file is written atomically: an
    existing file at `path` is only replaced once conversion and the
    interpreter check succeeded.

    Quantization modes:
    - `None`: float32 weights and activations.
    - `"dynamic"`: int8 weights, float activations quantized on the fly.
    - `"float16"`: float16 weights, computed in float32.
    - `"int8"`: full-integer model calibrated on `representative_data`. All
      ops run in int8, but the input and output tensors stay float32 (the
      file starts with QUANTIZE and ends with DEQUANTIZE), so callers feed
      the same inputs as to the Keras model.

    Verification runs the file in the LiteRT interpreter (`ai_edge_litert`,
    with its default XNNPACK delegate, falling back to the built-in kernels if
    XNNPACK refuses the file) on `sample_inputs`, or else on the
    `representative_data` samples, or else on 16 uniform [0, 1) random inputs,
    and compares the outputs with the input model's.

    Args:
        model: A built Sequential or functional `keras.Model` with one input.
            Not modified.
        path: String or path-like. The `.tflite` file to write; its directory
            must exist.
        quantize: One of `None`, `"dynamic"`, `"float16"`, `"int8"`. Defaults
            to `None`.
        representative_data: Calibration inputs, required for `"int8"`: a
            NumPy array (samples first) or a `tf.data.Dataset` of inputs,
            batched or not, or of `(inputs, labels)` tuples. At most the first
            256 samples are used, one at a time. Defaults to `None`.
        sparse: Bool. Turns on the converter's sparsity encoding
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`), which stores mostly
            zero weights compactly (for example after STR training); the
            report then also gives the size without it. Defaults to `False`.
        verify: Bool. Run the file in the interpreter and report the error.
            Defaults to `True`.
        overwrite: Bool. Replace an existing file at `path`. Defaults to `True`.
        sample_inputs: Verification inputs: a NumPy array (samples first) or a
            `tf.data.Dataset` like `representative_data` (at most 4096 samples
            are taken from a dataset). Defaults to `None`.

    Returns:
        An `ExportReport`: path, size, gzip size, op counts, input/output
        tensors and, if verified, the max abs error and top-1 agreement.

    Raises:
        TypeError: If `model` is not a graph Keras model, or the data are not
            arrays or datasets.
        ValueError: For an unknown `quantize`, `"int8"` without
            `representative_data`, a model with several inputs, data whose
            shape does not fit the model's input, an output directory that
            does not exist or is not writable, or a model that uses ops
            TFLite has no built-in kernel for.
        FileExistsError: If `path` exists and `overwrite` is False.

    Example:

    >>> import keras, numpy as np, tfprune
    >>> inputs = keras.Input((8, 8, 1))
    >>> outputs = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    >>> model = keras.Model(inputs, outputs)
    >>> report = tfprune.export.to_tflite(model, "model.tflite")  # doctest: +SKIP
    >>> report.max_abs_error < 1e-5  # doctest: +SKIP
    True
    >>> images = np.random.rand(100, 8, 8, 1).astype("float32")
    >>> report = tfprune.export.to_tflite(  # doctest: +SKIP
    ...     model, "model_int8.tflite", quantize="int8", representative_data=images)
    """
    caller = "tfprune.export.to_tflite"
    require_graph_model(model, caller)
    if not isinstance(quantize, (str, type(None))) or quantize not in QUANTIZERS:
        raise ValueError(
            f"`quantize` must be one of {', '.join(repr(mode) for mode in QUANTIZERS)}. "
            f"Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            'quantize="int8" calibrates activation ranges, so it needs `representative_data` '
            "(an array or tf.data.Dataset of a few hundred typical inputs). "
            "Received: representative_data=None"
        )
    if len(model.inputs) != 1:
        raise ValueError(
            f"`{caller}` supports models with one input; model '{model.name}' has "
            f"{len(model.inputs)}. Received: model with inputs {[tensor.shape for tensor in model.inputs]}"
        )
    path = _check_output_path(path, overwrite)
    input_tensor = model.inputs[0]
    calibration = None
    if representative_data is not None:
        calibration = _as_samples(
            representative_data, input_tensor, "representative_data", MAX_CALIBRATION_SAMPLES
        )
    if sample_inputs is not None:
        sample_inputs = _as_samples(
            sample_inputs, input_tensor, "sample_inputs", MAX_VERIFICATION_SAMPLES
        )
    elif calibration is not None:
        sample_inputs = calibration
    elif verify:
        sample_inputs = _random_inputs(input_tensor)

    plain = _in_float32(strip(model))
    with tempfile.TemporaryDirectory() as saved_model_dir:
        _write_saved_model(plain, input_tensor, saved_model_dir)
        content = _convert(saved_model_dir, quantize, calibration, sparse, model.name)
        dense_size = None
        if sparse:
            dense_size = len(_convert(saved_model_dir, quantize, calibration, False, model.name))

    report = ExportReport(
        path=path,
        quantize=quantize,
        sparse=bool(sparse),
        size_bytes=len(content),
        gzip_size_bytes=len(gzip.compress(content, compresslevel=9, mtime=0)),
        ops=_op_counts(content),
        dense_size_bytes=dense_size,
        **_tensor_summaries(content),
    )
    if verify:
        _verify(model, content, sample_inputs, report)
    with atomic_path(path, overwrite=overwrite) as temporary:
        with open(temporary, "wb") as file:
            file.write(content)
    return report


def predict(model_file, inputs, num_threads=None, use_xnnpack=True):
    """Runs a single-input `.tflite` file on NumPy inputs in the LiteRT interpreter.

    Integer (quantized) input tensors get `inputs` quantized with the tensor's
    scale and zero point; integer output tensors are dequantized, so the
    results are comparable with the float Keras model either way.

    Args:
        model_file: String or path-like of a `.tflite` file, or its bytes.
        inputs: Array-like, samples first.
        num_threads: Int or None. Interpreter threads. Defaults to `None`
            (the interpreter's default).
        use_xnnpack: Bool. Use LiteRT's default XNNPACK delegate; False runs
            the built-in kernels. Defaults to `True`.

    Returns:
        A list of float NumPy arrays, one per output of the file's signature,
        ordered `output_0`, `output_1`, ... (by name with numbers in order).

    Raises:
        TypeError: If `model_file` is not a path or bytes.
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not a TFLite model, has no signature or
            several inputs.
        RuntimeError: If the interpreter fails to run it (for example the
            XNNPACK delegate refuses it; retry with `use_xnnpack=False`).

    Example:

    >>> outputs = tfprune.export.predict("model.tflite", images)  # doctest: +SKIP
    >>> outputs[0].shape  # doctest: +SKIP
    (100, 10)
    """
    interpreter = _interpreter(model_file, num_threads, use_xnnpack)
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise ValueError(
            f"TFLite file {_describe(model_file)} has no signature, so its inputs and outputs "
            "cannot be matched by name; convert it from a SavedModel or Keras model."
        )
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    input_details = runner.get_input_details()
    if len(input_details) != 1:
        raise ValueError(
            f"`predict` supports TFLite files with one input; {_describe(model_file)} has "
            f"{len(input_details)}: {sorted(input_details)}."
        )
    ((input_name, details),) = input_details.items()
    output_details = runner.get_output_details()
    output_names = sorted(output_details, key=_natural_order)
    inputs = np.asarray(inputs)
    batch = int(details["shape_signature"][0])
    chunk = len(inputs) if batch == -1 else batch
    results = []
    for start in range(0, len(inputs), chunk):
        outputs = runner(**{input_name: _quantize(inputs[start : start + chunk], details)})
        # The runner returns views of interpreter memory that the next call overwrites.
        results.append([_dequantize(outputs[name], output_details[name]) for name in output_names])
    return [np.concatenate(parts) for parts in zip(*results)]


def benchmark(path, threads=(1, 2), runs=50, warmup=5):
    """Measures LiteRT latency and peak memory of a `.tflite` file.

    For each thread count a fresh interpreter with LiteRT's default CPU
    delegate (XNNPACK; the built-in kernels if XNNPACK refuses the file) is fed
    one fixed random input (uniform [0, 1) floats, zeros for integer inputs;
    dynamic dimensions set to 1), invoked `warmup` times, then timed over
    `runs` invocations. Peak memory is measured in a fresh Python process that
    only imports `ai_edge_litert`, loads the file and runs it once.

    Args:
        path: String or path-like. The `.tflite` file.
        threads: Tuple of positive ints. Thread counts to measure. Defaults to
            `(1, 2)`.
        runs: Positive int. Timed invocations per thread count. Defaults to 50.
        warmup: Non-negative int. Untimed invocations first. Defaults to 5.

    Returns:
        A `BenchmarkReport` with median/min/max milliseconds per thread count
        and the peak resident memory (None except on Linux).

    Raises:
        TypeError: If `path` is not a path.
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not a TFLite model, or `threads`, `runs` or
            `warmup` are out of range.

    Example:

    >>> report = tfprune.export.benchmark("model.tflite", threads=(1, 2), runs=20)  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    """
    threads = tuple(threads) if isinstance(threads, (tuple, list)) else (threads,)
    if not threads or not all(_is_int(count) and count >= 1 for count in threads):
        raise ValueError(
            f"`threads` must be a tuple of positive ints such as (1, 2). Received: threads={threads!r}"
        )
    if not _is_int(runs) or runs < 1:
        raise ValueError(f"`runs` must be a positive int such as 50. Received: runs={runs!r}")
    if not _is_int(warmup) or warmup < 0:
        raise ValueError(
            f"`warmup` must be a non-negative int such as 5. Received: warmup={warmup!r}"
        )
    use_xnnpack = True
    latency = []
    for count in threads:
        interpreter, use_xnnpack = _ready_interpreter(path, count)
        for _ in range(warmup):
            interpreter.invoke()
        milliseconds = []
        for _ in range(runs):
            start = time.perf_counter()
            interpreter.invoke()
            milliseconds.append(1000 * (time.perf_counter() - start))
        latency.append(
            {
                "threads": count,
                "median_ms": float(np.median(milliseconds)),
                "min_ms": float(np.min(milliseconds)),
                "max_ms": float(np.max(milliseconds)),
            }
        )
    peak, model_memory = _peak_memory(os.fspath(path), max(threads), use_xnnpack)
    return BenchmarkReport(
        path=os.fspath(path),
        delegate="xnnpack" if use_xnnpack else "builtin",
        input_shapes=[details["shape"].tolist() for details in interpreter.get_input_details()],
        runs=runs,
        warmup=warmup,
        latency=latency,
        peak_rss_bytes=peak,
        model_rss_bytes=model_memory,
    )


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_output_path(path, overwrite):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`path` must be a file path string such as 'model.tflite'. Received: path={path!r}"
        )
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(
            f"`path` is a directory; give a file name such as 'model.tflite'. Received: path={path!r}"
        )
    if not os.path.isdir(directory):
        raise ValueError(
            f"The output directory '{directory}' does not exist; create it first. Received: path={path!r}"
        )
    if not os.access(directory, os.W_OK):
        raise ValueError(
            f"The output directory '{directory}' is not writable; choose another path. Received: path={path!r}"
        )
    if not overwrite and os.path.exists(path):
        raise FileExistsError(
            f"Output file '{path}' already exists; choose another path or pass overwrite=True."
        )
    return path


def _as_samples(data, input_tensor, argument, limit):
    """Returns `data` as an array of input samples (samples first) for `input_tensor`."""
    if isinstance(data, tf.data.Dataset):
        data = _dataset_samples(data, len(input_tensor.shape) - 1, limit, argument)
    try:
        array = np.asarray(data, dtype=input_tensor.dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{argument}` must be a NumPy array of inputs (samples first) or a tf.data.Dataset. "
            f"Received: {argument} of type {type(data).__name__} ({error})"
        ) from None
    expected = tuple(input_tensor.shape)
    fits = array.ndim == len(expected) and all(
        size is None or size == actual for size, actual in zip(expected[1:], array.shape[1:])
    )
    if not fits or len(array) == 0:
        raise ValueError(
            f"`{argument}` must hold at least one sample of the model's input shape {expected} "
            f"(samples first). Received: {argument} with shape {array.shape}"
        )
    return array[:limit]


def _dataset_samples(dataset, sample_rank, limit, argument):
    samples = []
    count = 0
    for element in dataset:
        if isinstance(element, (tuple, list)):
            element = element[0]  # (inputs, labels) or (inputs, labels, sample_weights)
        values = np.asarray(element)
        if values.ndim == sample_rank:
            values = values[None]
        samples.append(values)
        count += len(values)
        if count >= limit:
            break
    if not samples:
        raise ValueError(f"`{argument}` is an empty tf.data.Dataset; give it at least one input.")
    try:
        return np.concatenate(samples)
    except ValueError:
        raise ValueError(
            f"The elements of `{argument}` have different shapes "
            f"({sorted({values.shape for values in samples})}); give inputs of one shape."
        ) from None


def _random_inputs(input_tensor):
    shape = tuple(input_tensor.shape[1:])
    if None in shape or not np.issubdtype(np.dtype(input_tensor.dtype), np.floating):
        raise ValueError(
            f"Cannot make random verification inputs for input shape {tuple(input_tensor.shape)} "
            f"and dtype {input_tensor.dtype}; pass `sample_inputs` or set verify=False."
        )
    random = np.random.default_rng(0)
    return random.uniform(0.0, 1.0, size=(RANDOM_SAMPLES, *shape)).astype(input_tensor.dtype)


def _in_float32(model):
    """Returns `model`, or a float32 copy if some layers compute in another dtype.

    TFLite has no float16 kernels for most ops, so a mixed-precision model is
    exported in float32 (its variables are float32 already); `quantize`
    chooses the file's precision.
    """
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in model.layers):
        return model

    def clone_function(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone_function)
    for source, target in zip(model.layers, copy.layers):
        target.set_weights(source.get_weights())
    return copy


def _write_saved_model(model, input_tensor, directory):
    def serve(inputs):
        outputs = keras.tree.flatten(model(inputs, training=False))
        return {f"output_{index}": output for index, output in enumerate(outputs)}

    # The TFLite input is named after the Keras InputLayer; Keras has no public
    # accessor for the layer that created an input tensor.
    input_name = input_tensor._keras_history.operation.name
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        serve,
        input_signature=[tf.TensorSpec(input_tensor.shape, input_tensor.dtype, name=input_name)],
    )
    archive.write_out(directory, verbose=False)


def _convert(saved_model_dir, quantize, calibration, sparse, model_name):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = []
    QUANTIZERS[quantize](converter)
    if calibration is not None and quantize == "int8":

        def representative_dataset():
            for index in range(len(calibration)):
                yield [calibration[index : index + 1]]

        converter.representative_dataset = representative_dataset
    if sparse:
        converter.optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    try:
        return converter.convert()
    except Exception as error:  # tf.lite's ConverterError is not a public name
        missing = sorted(
            set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", str(error)))
        )
        reason = (
            f"TensorFlow ops {missing} have no TFLite built-in kernel; replace the layers that use them"
            if missing
            else f"the TFLite converter failed: {str(error).strip().splitlines()[0]}"
        )
        raise ValueError(f"Cannot convert model '{model_name}' to TFLite: {reason}.") from error


def _interpreter(model_file, num_threads=None, use_xnnpack=True):
    resolver = (
        OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    if isinstance(model_file, bytes):
        source = {"model_content": model_file}
    elif isinstance(model_file, (str, os.PathLike)):
        if not os.path.isfile(model_file):
            raise FileNotFoundError(f"TFLite file '{os.fspath(model_file)}' does not exist.")
        source = {"model_path": os.fspath(model_file)}
    else:
        raise TypeError(
            "Expected the path of a .tflite file or its bytes. "
            f"Received: an object of type {type(model_file).__name__}"
        )
    try:
        return Interpreter(
            **source, num_threads=num_threads, experimental_op_resolver_type=resolver
        )
    except ValueError as error:
        raise ValueError(
            f"{_describe(model_file)} is not a TFLite model the LiteRT interpreter can read ({error})."
        ) from None


def _describe(model_file):
    return "(bytes)" if isinstance(model_file, bytes) else f"'{os.fspath(model_file)}'"


def _natural_order(name):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _quantize(values, details):
    dtype = np.dtype(details["dtype"])
    scale, zero_point = details["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        limits = np.iinfo(dtype)
        quantized = np.round(values / scale + zero_point)
        return np.clip(quantized, limits.min, limits.max).astype(dtype)
    return values.astype(dtype)


def _dequantize(values, details):
    scale, zero_point = details["quantization"]
    if np.issubdtype(np.dtype(details["dtype"]), np.integer) and scale:
        return (values.astype(np.float32) - zero_point) * np.float32(scale)
    return np.array(values, copy=True)


def _op_counts(content):
    interpreter = _interpreter(content, use_xnnpack=False)
    counts = {}
    # The interpreter has no public node list; without delegates every node is
    # one op of the file.
    for op in interpreter._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))


def _tensor_summaries(content):
    interpreter = _interpreter(content, use_xnnpack=False)
    runner = interpreter.get_signature_runner()

    def summary(name, details):
        scale, zero_point = details["quantization"]
        return {
            "name": name,
            "shape": details["shape_signature"].tolist(),
            "dtype": np.dtype(details["dtype"]).name,
            "scale": float(scale),
            "zero_point": int(zero_point),
        }

    return {
        "inputs": [summary(name, details) for name, details in runner.get_input_details().items()],
        "outputs": [
            summary(name, details)
            for name, details in sorted(
                runner.get_output_details().items(), key=lambda item: _natural_order(item[0])
            )
        ],
    }


def _keras_outputs(model, samples):
    batch = model.inputs[0].shape[0] or 256
    parts = []
    for start in range(0, len(samples), batch):
        outputs = keras.tree.flatten(model(samples[start : start + batch], training=False))
        parts.append([keras.ops.convert_to_numpy(output) for output in outputs])
    return [np.concatenate(outputs) for outputs in zip(*parts)]


def _verify(model, content, samples, report):
    try:
        outputs = predict(content, samples)
        report.xnnpack = True
    except RuntimeError:  # XNNPACK refuses some files, e.g. sparse-encoded int8 weights
        outputs = predict(content, samples, use_xnnpack=False)
        report.xnnpack = False
    expected = _keras_outputs(model, samples)
    report.num_samples = len(samples)
    report.max_abs_error = max(
        float(np.max(np.abs(actual - reference))) for actual, reference in zip(outputs, expected)
    )
    agreements = [
        float(np.mean(np.argmax(actual, axis=-1) == np.argmax(reference, axis=-1)))
        for actual, reference in zip(outputs, expected)
        if reference.ndim == 2 and reference.shape[1] > 1
    ]
    report.top1_agreement = min(agreements) if agreements else None


def _ready_interpreter(path, num_threads):
    """Returns an interpreter that has run once on a random input, and whether it uses XNNPACK."""
    try:
        return _run_once(_interpreter(path, num_threads, use_xnnpack=True)), True
    except RuntimeError:  # XNNPACK refuses some files (sparse int8 weights) when first invoked
        return _run_once(_interpreter(path, num_threads, use_xnnpack=False)), False


def _run_once(interpreter):
    interpreter.allocate_tensors()
    random = np.random.default_rng(0)
    for details in interpreter.get_input_details():
        dtype = np.dtype(details["dtype"])
        if np.issubdtype(dtype, np.floating):
            values = random.uniform(0.0, 1.0, size=details["shape"]).astype(dtype)
        else:
            values = np.zeros(details["shape"], dtype)
        interpreter.set_tensor(details["index"], values)
    interpreter.invoke()
    return interpreter


# Runs in a fresh process so that the peak resident memory is the interpreter's,
# not TensorFlow's. Linux only: it reads the peak (VmHWM) of this process's own
# memory from /proc; `resource.getrusage` would report the parent's peak, which
# survives fork and exec.
_MEMORY_PROBE = """
import sys
from ai_edge_litert.interpreter import Interpreter, OpResolverType

def status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])

with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")  # restart the peak from the current resident memory
before = status_kib("VmRSS")
interpreter = Interpreter(
    model_path=sys.argv[1],
    num_threads=int(sys.argv[2]),
    experimental_op_resolver_type=OpResolverType[sys.argv[3]],
)
interpreter.allocate_tensors()
interpreter.invoke()
peak = status_kib("VmHWM")
print(1024 * peak, 1024 * (peak - before))
"""


def _peak_memory(path, num_threads, use_xnnpack):
    """Returns (peak RSS bytes, RSS bytes added by the model), or (None, None)."""
    resolver = "AUTO" if use_xnnpack else "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    try:
        result = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, path, str(num_threads), resolver],
            capture_output=True,
            text=True,
            timeout=300,
        )
        peak, added = (int(value) for value in result.stdout.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None, None  # not Linux (no /proc), or the probe failed
    return peak, added
