"""Running `.tflite` files in the LiteRT interpreter and comparing them with Keras."""

import os
import re

import keras
import numpy as np

from tfprune._utils import LazyModule

litert = LazyModule("ai_edge_litert.interpreter")  # imported when a file is first run


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


def _interpreter(model_file, num_threads=None, use_xnnpack=True):
    resolver = (
        litert.OpResolverType.AUTO if use_xnnpack else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
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
        return litert.Interpreter(
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
