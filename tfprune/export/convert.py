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
import subprocess
import sys
import tempfile
import warnings

import keras
import numpy as np

from tfprune._optional import OptionalModule, require
from tfprune._utils import atomic_path, check_verbose, first_line, require_graph_model
from tfprune.export.inputs import (
    _call_arguments,
    _input_structure,
    _sample_count,
    _unknown_sizes,
    as_batches,
    model_inputs,
    random_batch,
)
from tfprune.export.legalize import missing_ops_reason, rewrite_saved_model
from tfprune.export.report import ExportReport
from tfprune.export.verify import _op_counts, _tensor_summaries, _verify
from tfprune.sparsity import strip

__all__ = [
    "MAX_CALIBRATION_SAMPLES",
    "MAX_VERIFICATION_SAMPLES",
    "QUANTIZERS",
    "RANDOM_SAMPLES",
    "to_tflite",
]

tf = OptionalModule("tensorflow", "Export to LiteRT")  # imported by the first conversion

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
    float16 kernels; use `quantize="float16"` for half-size weights). Only
    TFLite built-in ops are allowed, so the file runs on the plain LiteRT
    runtime of a phone; ops the converter would leave as TensorFlow ops
    although LiteRT computes them otherwise (`x[:, None, :]` over several
    unknown sizes, as keras-hub's attention masks; int64 `abs` and `sign`;
    `roll` by a constant along an axis of known size) are rewritten first,
    and a model that still needs a TensorFlow op (a Fourier transform, a
    roll along an axis of unknown size) is refused naming its layer. The file is written atomically: an existing file at
    `path` is only replaced once conversion and the interpreter check
    succeeded.

    Models with several inputs (keras-hub's text models take `token_ids`,
    `padding_mask` and `segment_ids`) export as they are: the file's
    signature has one input per model input, named by the model's input
    dict key or else by its `keras.Input` layer's name (a character a
    TensorFlow signature refuses becomes `_`), and inputs, outputs and data
    are matched by these names, never by position. Integer inputs (token
    ids, uint8 pixels) keep their dtype. Sizes the model leaves unknown (the
    batch, a sequence length, an image's height and width) stay dynamic in
    the file (-1 in the report's input shapes): the LiteRT interpreter sizes
    its tensors to each call's inputs (its signature runner does it itself;
    with the tensor API call `resize_tensor_input`, then `allocate_tensors`).
    Verification runs the file on the sample inputs' sizes.

    Quantization modes:
    - `None`: float32 weights and activations.
    - `"dynamic"`: int8 weights, float activations quantized on the fly.
    - `"float16"`: float16 weights, computed in float32.
    - `"int8"`: full-integer model calibrated on `representative_data`. All
      ops run in int8, but float input and output tensors stay float32 (the
      file starts with QUANTIZE and ends with DEQUANTIZE) and integer inputs
      keep their dtype, so callers feed the same inputs as to the Keras model.

    Verification runs the file in the LiteRT interpreter (`ai_edge_litert`,
    with its default XNNPACK delegate, falling back to the built-in kernels if
    XNNPACK refuses the file) on `sample_inputs`, or else on the
    `representative_data` samples, or else on 16 random inputs made per
    input: inputs whose name contains "mask" (padding masks) and bool inputs
    are ones, other float inputs uniform in [0, 1), uint8 inputs (pixels)
    uniform over 0..255, and other integer inputs (token or segment ids)
    zeros, the only value below every vocabulary size (which the model does
    not tell in general). Pass real `sample_inputs` for a stronger check,
    and for any model with an unknown size other than the batch.

    Args:
        model: A built Sequential or functional `keras.Model`, with one or
            several inputs. Not modified.
        path: String or path-like. The `.tflite` file to write; its directory
            must exist.
        quantize: One of `None`, `"dynamic"`, `"float16"`, `"int8"`. Defaults
            to `None`.
        representative_data: Calibration inputs, required for `"int8"`: a
            NumPy array (samples first; one-input models), a dict input name
            -> array, a list of arrays in `model.inputs` order, or a
            `tf.data.Dataset` of such inputs, batched or not, or of
            `(inputs, labels)` tuples as `fit` takes (elements may change
            shape from batch to batch, as padded text does). At most the
            first 256 samples are used, one at a time. Defaults to `None`.
        sparse: Bool. Turns on the converter's sparsity encoding
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`), which stores mostly
            zero weights compactly (for example after STR training); the
            report then also gives the size without it. Defaults to `False`.
        verify: Bool. Run the file in the interpreter and report the error.
            Defaults to `True`.
        overwrite: Bool. Replace an existing file at `path`. Defaults to `True`.
        sample_inputs: Verification inputs, in any form `representative_data`
            takes (at most 4096 samples are taken from a dataset). Defaults
            to `None`.
        verbose: `"auto"` (1), 0, 1 or 2, as in Keras's `fit`: at 1 or 2 one
            line per stage (converting, verifying, written) goes to stdout, as
            conversion can take half a minute. Defaults to `"auto"`.

    Returns:
        An `ExportReport`: path, size, gzip size, op counts, input/output
        tensors and, if verified, the max abs error and top-1 agreement.

    Raises:
        TypeError: If `model` is not a graph Keras model, or the data are not
            arrays, dicts of arrays or datasets (or a single array for a
            model with several inputs).
        ValueError: For an unknown `quantize` or `verbose`, `"int8"` without
            `representative_data`, data whose names or shapes do not fit the
            model's inputs, verification of a model with an unknown size
            other than the batch without `sample_inputs`, an output
            directory that does not exist or is not writable, or a model that
            uses ops TFLite has no built-in kernel for.
        FileExistsError: If `path` exists and `overwrite` is False.

    Example:

    A text classifier with token ids and a padding mask of any length:

    >>> import keras, numpy as np, tfprune
    >>> keras.utils.set_random_seed(0)
    >>> token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    >>> padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    >>> embedded = keras.layers.Embedding(100, 8)(token_ids)
    >>> mask = keras.ops.expand_dims(keras.ops.cast(padding_mask, "float32"), -1)
    >>> pooled = keras.ops.sum(embedded * mask, axis=1)
    >>> model = keras.Model({"token_ids": token_ids, "padding_mask": padding_mask},
    ...                     keras.layers.Dense(2)(pooled))
    >>> texts = {"token_ids": np.random.randint(0, 100, (32, 12)).astype("int32"),
    ...          "padding_mask": np.ones((32, 12), "int32")}
    >>> report = tfprune.export.to_tflite(model, "text.tflite", sample_inputs=texts, verbose=0)
    >>> report.max_abs_error < 1e-5
    True
    >>> [(tensor["name"], tensor["shape"]) for tensor in report.inputs]
    [('padding_mask', [-1, -1]), ('token_ids', [-1, -1])]
    >>> report = tfprune.export.to_tflite(model, "text_int8.tflite", quantize="int8",
    ...                                   representative_data=texts, verbose=0)
    >>> report.top1_agreement > 0.9, [tensor["dtype"] for tensor in report.inputs]
    (True, ['int32', 'int32'])
    """
    caller = "tfprune.export.to_tflite"
    require("Export to LiteRT", "tensorflow", "ai_edge_litert")  # before any work, on every backend
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
            "(an array, a dict input name -> array or a tf.data.Dataset of a few hundred typical "
            "inputs). Received: representative_data=None"
        )
    path = _check_output_path(path, overwrite)
    inputs = model_inputs(model)
    calibration = None
    if representative_data is not None:
        calibration = as_batches(representative_data, inputs, "representative_data", MAX_CALIBRATION_SAMPLES)
    if sample_inputs is not None:
        sample_inputs = as_batches(sample_inputs, inputs, "sample_inputs", MAX_VERIFICATION_SAMPLES)
    elif calibration is not None:
        sample_inputs = calibration
    elif verify:
        unknown = _unknown_sizes(inputs)
        if unknown:
            raise ValueError(
                f"Cannot make random verification inputs for input '{unknown[0].name}' of shape "
                f"{unknown[0].shape}: the model leaves sizes other than the batch unknown. Pass "
                "`sample_inputs` (an array, or a dict input name -> array) or set verify=False."
            )
        sample_inputs = [random_batch(inputs, RANDOM_SAMPLES)]

    say(f"{caller}: converting model '{model.name}' ({quantize or 'float32'}{', sparse' if sparse else ''}) ...",
        flush=True)  # fmt: skip
    plain = _in_float32(strip(model))
    _check_same_inputs(inputs, model_inputs(plain), model.name)
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
        say(f"{caller}: verifying on {_sample_count(sample_inputs)} inputs in the LiteRT interpreter ...",
            flush=True)  # fmt: skip
        _verify(model, inputs, content, sample_inputs, report)
    with atomic_path(path, overwrite=overwrite) as temporary:
        with open(temporary, "wb") as file:
            file.write(content)
    checked = "" if report.max_abs_error is None else f", max abs error {report.max_abs_error:.3g}"
    say(f"{caller}: wrote {path} ({report.size_bytes} bytes{checked})", flush=True)
    return report


def _check_same_inputs(inputs, plain_inputs, model_name):
    # `strip` and the float32 copy keep input names and structure; the data are
    # matched to the file's inputs by name, so check rather than assume it.
    if [(item.name, item.signature_name) for item in inputs] != [
        (item.name, item.signature_name) for item in plain_inputs
    ]:
        raise RuntimeError(
            f"Stripping model '{model_name}' renamed its inputs from {[item.name for item in inputs]} "
            f"to {[item.name for item in plain_inputs]}, so data could not be matched to the file's "
            "inputs; name each keras.Input after its key in the model's input dict."
        )


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
    `sparse`, the size of the same file without the sparsity encoding.
    `calibration` is a list of batches (dicts input name -> array) or None."""
    inputs = model_inputs(plain)
    with tempfile.TemporaryDirectory() as saved_model_dir:
        _write_saved_model(plain, inputs, saved_model_dir)
        content = _convert(saved_model_dir, inputs, quantize, calibration, sparse, model_name)
        dense_size = None
        if sparse:
            dense_size = len(_convert(saved_model_dir, inputs, quantize, calibration, False, model_name))
    return content, dense_size


def _convert_in_tensorflow_process(plain, quantize, calibration, sparse, model_name):
    """Other backends: the TFLite converter reads TensorFlow graphs, so the model
    goes through a `.keras` file to a TensorFlow-backend process
    (`tfprune.export._worker`) and comes back as the same bytes a TensorFlow
    user would get."""
    with tempfile.TemporaryDirectory() as directory:
        plain.save(os.path.join(directory, "model.keras"))
        arguments = {"quantize": quantize, "sparse": bool(sparse), "model_name": model_name}
        if calibration is not None:
            # Array names in an .npz file are file names: index them, keep the input names here.
            arguments["calibration_inputs"] = names = list(calibration[0])
            np.savez(
                os.path.join(directory, "calibration.npz"),
                **{f"batch{index}_input{position}": batch[name]
                   for index, batch in enumerate(calibration) for position, name in enumerate(names)},
            )  # fmt: skip
            arguments["calibration_batches"] = len(calibration)
        with open(os.path.join(directory, "arguments.json"), "w") as file:
            json.dump(arguments, file)
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


def _write_saved_model(model, inputs, directory):
    """Writes a SavedModel whose `serve` signature takes one tensor per input,
    named by `ModelInput.signature_name`, and returns `output_0`, `output_1`, ..."""
    structure = _input_structure(model)

    def serve(tensors):
        arguments = _call_arguments(
            structure, inputs, {item.name: tensors[item.signature_name] for item in inputs}
        )
        outputs = keras.tree.flatten(model(arguments, training=False))
        return {f"output_{index}": output for index, output in enumerate(outputs)}

    specs = {
        item.signature_name: tf.TensorSpec(item.shape, item.dtype, name=item.signature_name)
        for item in inputs
    }
    archive = keras.export.ExportArchive()
    archive.track(model)
    try:
        archive.add_endpoint("serve", serve, input_signature=[specs])
        archive.write_out(directory, verbose=False)  # traces `serve` (if `add_endpoint` did not)
    except Exception as error:  # the model's own code, run in graph mode: a refusal, not a crash
        # keras-hub's diffusion scheduler computes its noise levels with Python on tensors.
        raise ValueError(
            f"Cannot convert model '{model.name}' to TFLite: its call cannot be traced into a TensorFlow "
            f"graph ({first_line(error)})."
        ) from error
    # Slices with new axes over unknown sizes and int64 abs/sign as ops the converter lowers to built-ins.
    rewrite_saved_model(directory)


def _convert(saved_model_dir, inputs, quantize, calibration, sparse, model_name):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = []
    QUANTIZERS[quantize](converter)
    if calibration is not None and quantize == "int8":

        def representative_dataset():
            # One sample at a time, keyed by the signature's input names.
            for batch in calibration:
                for index in range(_sample_count([batch])):
                    yield {item.signature_name: batch[item.name][index : index + 1] for item in inputs}

        converter.representative_dataset = representative_dataset
    if sparse:
        converter.optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    try:
        with warnings.catch_warnings():
            # int8 calibration runs TensorFlow's own deprecated tf.lite.Interpreter; not the user's concern.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return converter.convert()
    except Exception as error:  # tf.lite's ConverterError is not a public name
        reason = missing_ops_reason(str(error)) or (
            f"the TFLite converter failed: {str(error).strip().splitlines()[0]}"
        )
        raise ValueError(f"Cannot convert model '{model_name}' to TFLite: {reason}.") from error
