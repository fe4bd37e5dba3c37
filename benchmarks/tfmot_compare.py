"""tfprune's magnitude pruning next to TensorFlow Model Optimization's, same CNN and data.

Usage: `.venv/bin/python -m benchmarks.tfmot_compare [--quick] [--tfmot-python PATH]`.
Writes the `## Magnitude pruning vs TFMOT` section of `benchmarks/RESULTS.md`.

TFMOT 0.8 only prunes legacy `tf_keras` models, so its side runs in a
subprocess with `TF_USE_LEGACY_KERAS=1`, using the interpreter given by
`--tfmot-python`, else `$TFPRUNE_TFMOT_PYTHON`, else `.venv-tfmot/bin/python`
if it exists, else this interpreter (after `pip install -e .[bench]`). Both
sides get the same arrays through an `.npz` file: the digits split, the dense
starting weights (the CNN is first trained unpruned in Keras 3 and copied into
the tf_keras twin) and the order of the examples in every epoch; both use Adam,
the same batch size and the same `PolynomialDecay(0 -> 0.9)` schedule, prune
every Conv2D and Dense kernel, strip the masks and evaluate on the test split.
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import write_section

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECTION = "## Magnitude pruning vs TFMOT"
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
FINAL_SPARSITY = 0.9
FREQUENCY = 10


def build_cnn(keras_module):
    """The benchmark CNN, built with Keras 3 or with tf_keras alike.

    Args:
        keras_module: The `keras` or the `tf_keras` package.

    Returns:
        A functional model from 8x8x1 digits to 10 logits.
    """
    layers = keras_module.layers
    inputs = layers.Input((8, 8, 1))
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Dense(10)(x)
    return keras_module.Model(inputs, outputs)


def schedule_arguments(prune_epochs, steps_per_epoch):
    """PolynomialDecay arguments: 0 -> 0.9 over the first 60% of the pruning epochs."""
    end_step = max(FREQUENCY, int(0.6 * prune_epochs * steps_per_epoch) // FREQUENCY * FREQUENCY)
    return dict(
        initial_sparsity=0.0,
        final_sparsity=FINAL_SPARSITY,
        begin_step=0,
        end_step=end_step,
        frequency=FREQUENCY,
    )


def kernel_sparsity(model):
    """Share of zeros over every Conv2D/Dense kernel of a (stripped) model."""
    kernels = [layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")]
    return float(sum(np.sum(k == 0) for k in kernels) / sum(k.size for k in kernels))


def fit_in_order(model, data, epochs, first_epoch, callbacks):
    """Trains one epoch per row of `data["order"]`, in that example order, unshuffled."""
    for epoch in range(first_epoch, first_epoch + epochs):
        order = data["order"][epoch]
        model.fit(
            data["x_train"][order],
            data["y_train"][order],
            batch_size=BATCH_SIZE,
            initial_epoch=epoch,
            epochs=epoch + 1,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )


def _compile(model, keras_module):
    model.compile(
        optimizer=keras_module.optimizers.Adam(LEARNING_RATE),
        loss=keras_module.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def run_tfprune(data, dense_epochs, prune_epochs, seed):
    """Trains the dense CNN, then prunes it with tfprune; returns (dense weights, results)."""
    import keras

    import tfprune

    keras.utils.set_random_seed(seed)
    model = build_cnn(keras)
    _compile(model, keras)
    fit_in_order(model, data, dense_epochs, 0, [])
    dense_weights = model.get_weights()
    dense_accuracy = model.evaluate(data["x_test"], data["y_test"], verbose=0)[1]
    steps_per_epoch = -(-len(data["x_train"]) // BATCH_SIZE)
    schedule = tfprune.PolynomialDecay(**schedule_arguments(prune_epochs, steps_per_epoch))
    pruned = tfprune.prune_low_magnitude(model, schedule=schedule)
    _compile(pruned, keras)
    start = time.perf_counter()
    fit_in_order(pruned, data, prune_epochs, dense_epochs, [tfprune.callbacks.UpdatePruningStep()])
    seconds = time.perf_counter() - start
    stripped = tfprune.strip(pruned)
    _compile(stripped, keras)
    accuracy = stripped.evaluate(data["x_test"], data["y_test"], verbose=0)[1]
    result = {
        "dense_accuracy": dense_accuracy,
        "accuracy": accuracy,
        "sparsity": kernel_sparsity(stripped),
        "seconds": seconds,
    }
    keras.backend.clear_session()
    return dense_weights, result


def run_tfmot_worker(data_path, output_path, dense_epochs, prune_epochs, seed):
    """The TFMOT side (runs under TF_USE_LEGACY_KERAS=1 with tf_keras installed)."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    data = dict(np.load(data_path))
    tf_keras.utils.set_random_seed(seed)
    model = build_cnn(tf_keras)
    model.set_weights([data[f"weight_{index}"] for index in range(len(model.get_weights()))])
    steps_per_epoch = -(-len(data["x_train"]) // BATCH_SIZE)
    schedule = tfmot.sparsity.keras.PolynomialDecay(**schedule_arguments(prune_epochs, steps_per_epoch))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    _compile(pruned, tf_keras)
    start = time.perf_counter()
    fit_in_order(pruned, data, prune_epochs, dense_epochs, [tfmot.sparsity.keras.UpdatePruningStep()])
    seconds = time.perf_counter() - start
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    _compile(stripped, tf_keras)
    accuracy = stripped.evaluate(data["x_test"], data["y_test"], verbose=0)[1]
    result = {
        "accuracy": accuracy,
        "sparsity": kernel_sparsity(stripped),
        "seconds": seconds,
        "versions": f"tensorflow {tf.__version__}, tf_keras {tf_keras.__version__}, "
        f"tensorflow-model-optimization {tfmot.__version__}",
    }
    pathlib.Path(output_path).write_text(json.dumps(result))


def tfmot_python(argument):
    """The interpreter for the TFMOT side: argument, env var, .venv-tfmot, or this one."""
    if argument:
        return argument
    if os.environ.get("TFPRUNE_TFMOT_PYTHON"):
        return os.environ["TFPRUNE_TFMOT_PYTHON"]
    separate = ROOT / ".venv-tfmot" / "bin" / "python"
    return str(separate) if separate.exists() else sys.executable


def digits_split():
    """scikit-learn's digits as 8x8x1 images in [0, 1], 75/25 stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    return {"x_train": x_train, "x_test": x_test, "y_train": y_train, "y_test": y_test}


def behind(mean_difference, seconds):
    """Markdown lines naming where tfprune's magnitude pruning is behind TFMOT's: accuracy, pruning time.

    Args:
        mean_difference: Float. Mean test-accuracy difference tfprune − TFMOT, in points.
        seconds: Dict "tfprune"/"TFMOT" -> list of wall-clock seconds of the pruning `fit` calls.

    Returns:
        List of strings: a heading line, one bullet per shortfall (or one saying there is none), a blank line.

    Example:

    >>> behind(0.1, {"tfprune": [12.0, 10.0, 11.0], "TFMOT": [9.0, 10.0, 8.0]})[2]
    '- Pruning time: median 11.0 s vs 9.0 s for TFMOT (1.22x).'
    """
    sentences = []
    if mean_difference < 0:
        sentences.append(f"- Accuracy: {-mean_difference:.2f} points below TFMOT on the mean over the seeds.")
    ours, theirs = (float(np.median(seconds[name])) for name in ("tfprune", "TFMOT"))
    if ours > theirs:
        sentences.append(f"- Pruning time: median {ours:.1f} s vs {theirs:.1f} s for TFMOT ({ours / theirs:.2f}x).")
    return ["Where tfprune is behind TFMOT:", "", *(sentences or ["- Nowhere in this run (mean accuracy, median time)."]), ""]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 2+2 epochs (smoke test)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument("--tfmot-python", default=None, help="interpreter with tf_keras and TFMOT")
    parser.add_argument("--tfmot-worker", nargs=2, metavar=("DATA_NPZ", "OUTPUT_JSON"), help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, nargs=2, default=(10, 10), metavar=("DENSE", "PRUNE"))
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dense_epochs, prune_epochs = (2, 2) if args.quick else args.epochs
    if args.tfmot_worker:
        run_tfmot_worker(*args.tfmot_worker, dense_epochs, prune_epochs, args.seed)
        return 0
    seeds = 1 if args.quick else args.seeds
    interpreter = tfmot_python(args.tfmot_python)
    data = digits_split()
    rows, differences, seconds = [], [], {"tfprune": [], "TFMOT": []}
    for seed in range(seeds):
        order = np.stack(
            [np.random.default_rng([seed, epoch]).permutation(len(data["x_train"])) for epoch in range(dense_epochs + prune_epochs)]
        )
        dense_weights, ours = run_tfprune({**data, "order": order}, dense_epochs, prune_epochs, seed)
        with tempfile.TemporaryDirectory() as directory:
            data_path = os.path.join(directory, "data.npz")
            output_path = os.path.join(directory, "tfmot.json")
            weights = {f"weight_{index}": weight for index, weight in enumerate(dense_weights)}
            np.savez(data_path, order=order, **data, **weights)
            environment = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
            command = [interpreter, "-m", "benchmarks.tfmot_compare", "--tfmot-worker", data_path, output_path, "--seed", str(seed), "--epochs", str(dense_epochs), str(prune_epochs)]
            if subprocess.run(command, cwd=ROOT, env=environment).returncode != 0:
                print(
                    f"The TFMOT side failed with interpreter {interpreter}; it needs tf_keras and "
                    "tensorflow-model-optimization (`pip install -e .[bench]`, or a separate "
                    "virtualenv passed with --tfmot-python).",
                    file=sys.stderr,
                )
                return 1
            theirs = json.loads(pathlib.Path(output_path).read_text())
        differences.append(100 * (ours["accuracy"] - theirs["accuracy"]))
        seconds["tfprune"].append(ours["seconds"])
        seconds["TFMOT"].append(theirs["seconds"])
        rows.append(
            f"| {seed} | {100 * ours['dense_accuracy']:.2f} | {100 * ours['accuracy']:.2f} "
            f"({100 * ours['sparsity']:.1f}% zeros, {ours['seconds']:.1f} s) | "
            f"{100 * theirs['accuracy']:.2f} ({100 * theirs['sparsity']:.1f}% zeros, "
            f"{theirs['seconds']:.1f} s) | {differences[-1]:+.2f} |"
        )
        print(rows[-1], flush=True)
    mean_difference = float(np.mean(differences))
    command = " ".join([".venv/bin/python -m benchmarks.tfmot_compare", *(argv if argv is not None else sys.argv[1:])])
    steps_per_epoch = -(-len(data["x_train"]) // BATCH_SIZE)
    schedule = ", ".join(f"{key}={value}" for key, value in schedule_arguments(prune_epochs, steps_per_epoch).items())
    try:
        interpreter = os.path.relpath(interpreter, ROOT)
    except ValueError:  # another drive on Windows
        pass
    text = "\n".join(
        [
            SECTION,
            "",
            f"Command: `{command}` ({platform.processor() or platform.machine()}, 2 cores shared "
            f"with other jobs; TFMOT side run by `{interpreter}` with `TF_USE_LEGACY_KERAS=1`: "
            f"{theirs['versions']}).",
            f"CNN Conv2D(32)-MaxPool-Conv2D(64)-Dense(128)-Dense(10) on scikit-learn digits "
            f"({len(data['x_train'])} train / {len(data['x_test'])} test), Adam {LEARNING_RATE}, "
            f"batch {BATCH_SIZE}: {dense_epochs} dense epochs in Keras 3, then the same starting "
            f"weights and example order for both, {prune_epochs} pruning epochs with "
            f"`PolynomialDecay({schedule})` on every Conv2D and Dense kernel; test accuracy after "
            "stripping the masks. Times are the wall-clock of the pruning epochs' `fit` calls.",
            "",
            "| Seed | Dense (%) | tfprune (%) | TFMOT (%) | tfprune − TFMOT (points) |",
            "| ---: | ---: | ---: | ---: | ---: |",
            *rows,
            "",
            f"Mean difference: {mean_difference:+.2f} points, largest single-seed difference "
            f"{max(differences, key=abs):+.2f} (target: within ±1).",
            "",
            *behind(mean_difference, seconds),
        ]
    )
    write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
