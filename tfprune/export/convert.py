"""Keras model -> `.tflite` file: stripping, SavedModel, TFLite conversion, atomic write.

Conversion follows Keras's own LiteRT path (`keras.export.ExportArchive` to a
SavedModel, then `tf.lite.TFLiteConverter.from_saved_model`, as in
`keras/src/export/litert.py`) but restricts the converter to TFLite built-in
ops: Keras's `model.export(format="litert")` also allows Flex (TensorFlow)
ops, which the plain LiteRT runtime on a phone cannot run. Converting from one
SavedModel also lets `sparse=True` convert twice to report the size gained by
the sparsity encoding.
"""

import gzip
import json
import os
import re
import subprocess
import sys
import tempfile

import keras
import numpy as np

from tfprune._utils import LazyModule, atomic_path, check_verbose, require_graph_model
from tfprune.export.report import ExportReport
from tfprune.export.verify import _op_counts, _tensor_summaries, _verify
from tfprune.sparsity import strip

tf = LazyModule("tensorflow")  # imported by the first conversion, not by `import tfprune`

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


def to_tflite(
    model,
    path,
    quantize=None,
    representative_data=None,
    sparse=False,
    verify=True,
    overwrite=True,
    sample_inputs=None,
    verbose="auto",
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

        verbose: `"auto"` (1), 0, 1 or 2, as in Keras's `fit`: at 1 or 2 one
            line per stage (converting, verifying, written) goes to stdout, as
            conversion can take half a minute. Defaults to `"auto"`.

    Returns:
        An `ExportReport`: path, size, gzip size, op counts, input/output
        tensors and, if verified, the max abs error and top-1 agreement.

    Raises:
        TypeError: If `model` is not a graph Keras model, or the data are not
            arrays or datasets.
        ValueError: For an unknown `quantize` or `verbose`, `"int8"` without
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
    say = print if check_verbose(verbose, caller) else (lambda *args, **kwargs: None)
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

    say(f"{caller}: converting model '{model.name}' ({quantize or 'float32'}{', sparse' if sparse else ''}) ...",
        flush=True)  # fmt: skip
    plain = _in_float32(strip(model))
    if keras.backend.backend() == "tensorflow":
        content, dense_size = convert_model(plain, quantize, calibration, sparse, model.name)
    else:
        content, dense_size = _convert_in_tensorflow_process(plain, quantize, calibration, sparse, model.name)

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
        say(f"{caller}: verifying on {len(sample_inputs)} inputs in the LiteRT interpreter ...", flush=True)
        _verify(model, content, sample_inputs, report)
    with atomic_path(path, overwrite=overwrite) as temporary:
        with open(temporary, "wb") as file:
            file.write(content)
    checked = "" if report.max_abs_error is None else f", max abs error {report.max_abs_error:.3g}"
    say(f"{caller}: wrote {path} ({report.size_bytes} bytes{checked})", flush=True)
    return report


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


def convert_model(plain, quantize, calibration, sparse, model_name):
    """TensorFlow backend: returns the `.tflite` bytes of `plain` and, with
    `sparse`, the size of the same file without the sparsity encoding."""
    with tempfile.TemporaryDirectory() as saved_model_dir:
        _write_saved_model(plain, plain.inputs[0], saved_model_dir)
        content = _convert(saved_model_dir, quantize, calibration, sparse, model_name)
        dense_size = None
        if sparse:
            dense_size = len(_convert(saved_model_dir, quantize, calibration, False, model_name))
    return content, dense_size


def _convert_in_tensorflow_process(plain, quantize, calibration, sparse, model_name):
    """Other backends: the TFLite converter reads TensorFlow graphs, so the model
    goes through a `.keras` file to a TensorFlow-backend process
    (`tfprune.export._worker`) and comes back as the same bytes a TensorFlow
    user would get."""
    with tempfile.TemporaryDirectory() as directory:
        plain.save(os.path.join(directory, "model.keras"))
        if calibration is not None:
            np.save(os.path.join(directory, "calibration.npy"), calibration)
        with open(os.path.join(directory, "arguments.json"), "w") as file:
            json.dump({"quantize": quantize, "sparse": bool(sparse), "model_name": model_name}, file)
        environment = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
        result = subprocess.run(
            [sys.executable, "-m", "tfprune.export._worker", directory],
            env=environment, capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
            last = lines[-1] if lines else f"exit code {result.returncode}"
            if result.returncode == 2:  # the converter's own one-sentence refusal
                raise ValueError(last)
            raise RuntimeError(
                f"Converting model '{model_name}' from the {keras.backend.backend()} backend runs the "
                "TFLite converter in a TensorFlow-backend process, which failed: "
                f"{last} If the model has layers of your own, register them with "
                "@keras.saving.register_keras_serializable in an importable module, or export with "
                "KERAS_BACKEND=tensorflow."
            )
        with open(os.path.join(directory, "model.tflite"), "rb") as file:
            content = file.read()
        dense_size = None
        if sparse:
            dense_size = os.path.getsize(os.path.join(directory, "dense.tflite"))
    return content, dense_size


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
