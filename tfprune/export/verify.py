"""Running `.tflite` files in the LiteRT interpreter and comparing them with Keras."""

import os
import re

import keras
import numpy as np

from tfprune._keras.lite import ops_details
from tfprune._optional import OptionalModule
from tfprune.export.inputs import _call_arguments, _input_structure, _sample_count

__all__ = ["predict"]

# Imported when a file is first run.
litert = OptionalModule("ai_edge_litert.interpreter", "Running a .tflite file")


def predict(model_file, inputs, num_threads=None, use_xnnpack=True):
    """Runs a `.tflite` file on NumPy inputs in the LiteRT interpreter.

    Inputs are matched to the file's signature inputs by name (the names
    `to_tflite` reports in `ExportReport.inputs`: the model's input dict keys
    or `keras.Input` names). Integer (quantized) input tensors get `inputs`
    quantized with the tensor's scale and zero point; integer output tensors
    are dequantized, so the results are comparable with the float Keras model
    either way. Unquantized integer inputs (token ids, masks, uint8 pixels)
    are passed as they are. Sizes the file leaves dynamic (-1 in its shape
    signature: the batch, a sequence length) take the inputs' sizes.

    Args:
        model_file: String or path-like of a `.tflite` file, or its bytes.
        inputs: Array-like, samples first, for a file with one input; or a
            dict input name -> array-like (each with the same number of
            samples), for any file.
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
        ValueError: If the file is not a TFLite model or has no signature,
            if `inputs` is not a dict with one array per input name of a file
            with several inputs, or if its arrays hold different numbers of
            samples.
        RuntimeError: If the interpreter fails to run it (for example the
            XNNPACK delegate refuses it; retry with `use_xnnpack=False`).

    Example:

    >>> import keras, numpy as np, tfprune
    >>> image = keras.Input((8, 8, 1), name="image")
    >>> scale = keras.Input((1,), name="scale")
    >>> features = keras.layers.Flatten()(image) * scale
    >>> model = keras.Model([image, scale], keras.layers.Dense(10)(features))
    >>> report = tfprune.export.to_tflite(model, "two_inputs.tflite", verbose=0)
    >>> inputs = {"image": np.random.rand(5, 8, 8, 1), "scale": np.full((5, 1), 2.0)}
    >>> outputs = tfprune.export.predict("two_inputs.tflite", inputs)
    >>> outputs[0].shape
    (5, 10)
    >>> expected = model([inputs["image"], inputs["scale"]])
    >>> bool(np.allclose(outputs[0], keras.ops.convert_to_numpy(expected), atol=1e-5))
    True
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
    arrays = _named_inputs(inputs, input_details, model_file)
    output_details = runner.get_output_details()
    output_names = sorted(output_details, key=_natural_order)
    # A file with a fixed batch size runs that many samples per call.
    batches = {int(details["shape_signature"][0]) for details in input_details.values()} - {-1}
    count = len(next(iter(arrays.values())))
    chunk = min(batches) if batches else count
    results = []
    for start in range(0, count, chunk):
        feed = {
            name: _quantize(values[start : start + chunk], input_details[name])
            for name, values in arrays.items()
        }
        outputs = runner(**feed)
        # The runner returns views of interpreter memory that the next call overwrites.
        results.append([_dequantize(outputs[name], output_details[name]) for name in output_names])
    return [np.concatenate(parts) for parts in zip(*results)]


def _named_inputs(inputs, input_details, model_file):
    """`inputs` as a dict signature input name -> array, checked against the file."""
    names = sorted(input_details)
    if isinstance(inputs, dict):
        if sorted(inputs) != names:
            raise ValueError(
                f"`inputs` must map each input name of {_describe(model_file)} to an array: "
                f"{names}. Received: inputs with keys {sorted(str(key) for key in inputs)}"
            )
        arrays = {name: np.asarray(values) for name, values in inputs.items()}
    elif len(names) == 1:
        arrays = {names[0]: np.asarray(inputs)}
    else:
        raise ValueError(
            f"{_describe(model_file)} has {len(names)} inputs, {names}; pass `inputs` as a dict "
            f"input name -> array. Received: an object of type {type(inputs).__name__}"
        )
    counts = {name: len(values) if values.ndim else 0 for name, values in arrays.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise ValueError(
            "`inputs` must hold at least one sample, and as many for every input. "
            f"Received: inputs with sample counts {counts}"
        )
    return arrays


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
    for op in ops_details(interpreter):  # without delegates, one node per op of the file
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


def _keras_outputs(model, inputs, batch):
    structure = _input_structure(model)
    size = inputs[0].shape[0] or 256
    parts = []
    for start in range(0, _sample_count([batch]), size):
        chunk = {name: values[start : start + size] for name, values in batch.items()}
        outputs = keras.tree.flatten(model(_call_arguments(structure, inputs, chunk), training=False))
        parts.append([keras.ops.convert_to_numpy(output) for output in outputs])
    return [np.concatenate(outputs) for outputs in zip(*parts)]


def _run_file(content, inputs, batches, use_xnnpack):
    return [
        predict(
            content,
            {item.signature_name: batch[item.name] for item in inputs},
            use_xnnpack=use_xnnpack,
        )
        for batch in batches
    ]


def _verify(model, inputs, content, batches, report):
    """Runs the file and the Keras model on `batches` (dicts input name ->
    array) and fills in the report's error, top-1 agreement and delegate."""
    try:
        results = _run_file(content, inputs, batches, use_xnnpack=True)
        report.xnnpack = True
    except RuntimeError:  # XNNPACK refuses some files, e.g. sparse-encoded int8 weights
        results = _run_file(content, inputs, batches, use_xnnpack=False)
        report.xnnpack = False
    errors, matches = [], {}
    for outputs, batch in zip(results, batches):
        expected = _keras_outputs(model, inputs, batch)
        for index, (actual, reference) in enumerate(zip(outputs, expected)):
            # In float64: bool outputs (a padding mask) cannot be subtracted, unsigned ones would wrap.
            errors.append(float(np.max(np.abs(np.asarray(actual, "float64") - np.asarray(reference, "float64")))))
            if reference.ndim == 2 and reference.shape[1] > 1:
                same = np.argmax(actual, axis=-1) == np.argmax(reference, axis=-1)
                matches.setdefault(index, []).append(same)
    report.num_samples = _sample_count(batches)
    report.max_abs_error = max(errors)
    agreements = [float(np.mean(np.concatenate(same))) for same in matches.values()]
    report.top1_agreement = min(agreements) if agreements else None
