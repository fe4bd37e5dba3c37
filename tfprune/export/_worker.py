"""Runs the TFLite conversion for a model of another Keras backend (private).

`python -m tfprune.export._worker DIRECTORY` with KERAS_BACKEND=tensorflow:
reads `model.keras`, `arguments.json` and, for int8, `calibration.npz` (one
array per batch and input; the input names are in `arguments.json`) from
DIRECTORY and writes `model.tflite` (and `dense.tflite` when `sparse`).
A conversion the converter refuses exits with code 2 and its one-sentence
reason as the last line of stderr; any other failure exits with code 1.
"""

import json
import os
import sys


def main(directory):
    import keras
    import numpy as np

    from tfprune.export.convert import convert_model

    with open(os.path.join(directory, "arguments.json")) as file:
        arguments = json.load(file)
    calibration = None
    if "calibration_inputs" in arguments:
        with np.load(os.path.join(directory, "calibration.npz"), allow_pickle=False) as arrays:
            calibration = [
                {name: arrays[f"batch{index}_input{position}"]
                 for position, name in enumerate(arguments["calibration_inputs"])}
                for index in range(arguments["calibration_batches"])
            ]  # fmt: skip
    try:
        model = keras.models.load_model(os.path.join(directory, "model.keras"))
    except Exception as error:  # noqa: BLE001 - reported to the parent as one line
        print(f"Loading the model there failed ({type(error).__name__}: {str(error).splitlines()[0]}).", file=sys.stderr)
        return 1
    try:
        content, dense_size = convert_model(
            model, arguments["quantize"], calibration, arguments["sparse"], arguments["model_name"]
        )
    except ValueError as error:
        print(str(error), file=sys.stderr)
        return 2
    with open(os.path.join(directory, "model.tflite"), "wb") as file:
        file.write(content)
    if dense_size is not None:
        with open(os.path.join(directory, "dense.tflite"), "wb") as file:
            file.write(b"\0" * dense_size)  # only its size is read
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
