"""The inputs `tfprune export` and `tfprune bench` run a model on.

`--input-shape` gives the sizes a model leaves unknown (checked against the
model's inputs), `--sample-inputs` real inputs from a `.npy`/`.npz` file, and
`--calibration` the representative data of integer quantization. Bad values
are refused with a `UsageError` naming the flag.
"""

import argparse
import os

from tfprune._cli_files import UsageError


def _shape_specification(text):
    """`224,224,3` -> (None, (224, 224, 3)); `token_ids=12` -> ("token_ids", (12,))."""
    name, separator, sizes = text.rpartition("=")
    try:
        shape = tuple(int(size) for size in sizes.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1 or (separator and not name):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a shape; give positive sizes separated by commas, without the batch "
            "axis, such as 224,224,3, or NAME=SIZES such as token_ids=12"
        )
    return (name if separator else None, shape)


def _input_shapes(specifications, inputs, owner):
    """The --input-shape values as a dict input name -> sample shape, checked against the model."""
    by_name = {item.name: item for item in inputs}
    shapes, unnamed = {}, []
    for name, shape in specifications:
        if name is None:
            unnamed.append(shape)
        elif name not in by_name:
            raise UsageError(
                f"--input-shape names input '{name}', but {owner} has inputs "
                f"{list(by_name)}; use one of these names."
            )
        else:
            shapes[name] = shape
    if len(unnamed) > 1:
        raise UsageError(
            "--input-shape takes at most one shape without a name (it applies to every input not "
            f"named); give NAME=SIZES for the others. Received: {len(unnamed)} unnamed shapes"
        )
    for item in inputs:
        if unnamed:
            shapes.setdefault(item.name, unnamed[0])
        if item.name not in shapes:
            continue
        expected, shape = item.shape[1:], shapes[item.name]
        if len(shape) != len(expected) or any(
            known is not None and known != size for known, size in zip(expected, shape)
        ):
            count = f"{len(expected)} size{'' if len(expected) == 1 else 's'}"
            raise UsageError(
                f"--input-shape {','.join(map(str, shape))} does not fit input '{item.name}' of shape "
                f"{item.shape} (batch first); give {count} without the batch axis, such as "
                f"{_example_sizes(item)}."
            )
    return shapes


def _require_known_sizes(inputs, shapes, owner, purpose="make verification inputs", bench=False):
    from tfprune.export.inputs import _unknown_sizes

    unknown = _unknown_sizes(inputs, shapes)
    if unknown:
        names = ", ".join(f"'{item.name}' {item.shape}" for item in unknown)
        if len(inputs) == 1:
            example = _example_sizes(unknown[0])
        else:
            example = " ".join(f"{item.name}={_example_sizes(item)}" for item in unknown)
        alternative = (
            ""
            if bench
            else " or --sample-inputs FILE (.npy, or .npz with one array per input name)"
        )
        raise UsageError(
            f"{owner} leaves sizes of input{'s' if len(unknown) > 1 else ''} {names} unknown, so the "
            f"command cannot {purpose}; pass --input-shape {example} (sizes without the batch "
            f"axis){alternative}."
        )


def _file_inputs(path):
    """The inputs of a `.tflite` file's signature, as `ModelInput`s (None for dynamic sizes)."""
    import numpy as np

    from tfprune.export.inputs import ModelInput
    from tfprune.export.verify import _interpreter

    runner = _interpreter(path, use_xnnpack=False).get_signature_runner()
    return [
        ModelInput(
            name,
            name,
            tuple(None if size == -1 else int(size) for size in details["shape_signature"]),
            np.dtype(details["dtype"]).name,
        )
        for name, details in sorted(runner.get_input_details().items())
    ]


def _example_sizes(item):
    return ",".join(str(32 if size is None else size) for size in item.shape[1:])


def _check_sample_inputs_file(path):
    if not path.endswith((".npy", ".npz")):
        raise UsageError(
            f"--sample-inputs '{path}' is not a .npy or .npz file; save the inputs with np.save "
            "(one input) or np.savez (one array per input name)."
        )
    if not os.path.isfile(path):
        raise UsageError(f"--sample-inputs file '{path}' does not exist.")


def _sample_inputs(path, inputs, model_name):
    """The arrays of a --sample-inputs file: one array, or a dict input name -> array."""
    import numpy as np

    from tfprune import export
    from tfprune.export.inputs import as_batches

    names = [item.name for item in inputs]
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            data = loaded
        else:
            with loaded:
                data = {key: loaded[key] for key in loaded.files}
    except Exception as error:  # NumPy raises several types for files it cannot read
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise UsageError(
            f"Cannot read --sample-inputs '{path}' as NumPy data: {first_line}"
        ) from None
    if isinstance(data, np.ndarray) and len(inputs) > 1:
        arguments = ", ".join(f"{name}=..." for name in names)
        raise UsageError(
            f"--sample-inputs '{path}' holds one array, but model '{model_name}' has {len(inputs)} "
            f"inputs {names}; save one array per input name in an .npz file, "
            f"np.savez('inputs.npz', {arguments})."
        )
    if isinstance(data, dict) and len(inputs) == 1 and len(data) == 1:
        (data,) = data.values()  # one array, whatever np.savez named it
    as_batches(
        data, inputs, "--sample-inputs", export.MAX_VERIFICATION_SAMPLES
    )  # refused here by name
    return data


def _calibration_data(args, inputs, shapes, model_name):
    import numpy as np

    from tfprune.export.inputs import random_batch

    source = args.calibration or ("samples" if args.sample_inputs is not None else "random")
    if source == "samples":
        return _sample_inputs(args.sample_inputs, inputs, model_name)
    if source == "digits":
        from tfprune import datasets

        shape = shapes.get(inputs[0].name, inputs[0].shape[1:])
        if len(inputs) != 1 or len(shape) != 3:
            raise UsageError(
                "--calibration digits needs an image model with one (height, width, channels) input; "
                f"model '{model_name}' has inputs {[item.shape for item in inputs]}."
            )
        _require_known_sizes(inputs, shapes, f"Model '{model_name}'", "make calibration inputs")
        if shape[0] != shape[1]:
            raise UsageError(
                f"--calibration digits makes square images; input '{inputs[0].name}' is {shape[0]}x"
                f"{shape[1]}. Use --calibration random or --sample-inputs FILE."
            )
        (images, _), _ = datasets.digits(image_size=shape[0], channels=shape[2], as_numpy=True)
        if inputs[0].dtype == "uint8":
            images = np.round(255 * images)  # the digits are floats in [0, 1]
        return images[:200].astype(inputs[0].dtype)
    _require_known_sizes(inputs, shapes, f"Model '{model_name}'", "make calibration inputs")
    return random_batch(inputs, 100, shapes, seed=1)
