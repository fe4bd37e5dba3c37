"""An STR 90% model exported to LiteRT with and without sparse encoding: size, gzip size, latency.

Usage: `.venv/bin/python -m benchmarks.sparse_deploy [--quick] [--epochs N] [--runs N]`.
Writes the `## Sparse deployment (STR 90%)` section of the results file.

MobileNetV3-Small 32x32x3 (`tfprune.models.mobilenet_v3`) is converted with
`tfprune.sparsify` and trained on the offline digits data with
`tfprune.callbacks.SparsityBudget(0.9)`, then exported in float32 by
`tfprune.export.to_tflite` with `sparse=False` and `sparse=True` (the
converter's `EXPERIMENTAL_SPARSITY` encoding), checked against Keras on the
test images and timed with `tfprune.export.benchmark` (XNNPACK, 1 and 2
threads). The dense model trained the same epochs without STR is the
reference row. `--quick` swaps in the small CNN of `benchmarks.tfmot_compare`
on 8x8x1 digits so that the CI smoke test stays fast.
"""

import argparse
import os
import sys
import tempfile

import keras

import tfprune
from benchmarks.common import command_line, machine, write_section
from benchmarks.tfmot_compare import build_cnn

SECTION = "## Sparse deployment (STR 90%)"
TARGET = 0.9
THREADS = (1, 2)


def model_and_data(quick):
    """(title, builder of fresh models, loss, digits arrays) for the full or the quick run."""
    if quick:
        (x_train, y_train), (x_test, y_test) = tfprune.datasets.digits(image_size=8, channels=1, as_numpy=True)
        data = ((x_train[:128], y_train[:128]), (x_test[:128], y_test[:128]))
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return "CNN 8x8x1 (quick)", lambda: build_cnn(keras), loss, data
    data = tfprune.datasets.digits(image_size=32, as_numpy=True)
    loss = keras.losses.SparseCategoricalCrossentropy()  # the model ends in a softmax
    return "MobileNetV3-Small 32x32x3", lambda: tfprune.models.mobilenet_v3("small", seed=0), loss, data


def trained(model, loss, data, epochs, callbacks):
    """Compiles `model` (Adam 1e-3), trains it on the digits arrays; returns it."""
    (x_train, y_train), _ = data
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CNN, 1 epoch on 128 images, 3 timed runs")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of both models")
    parser.add_argument("--runs", type=int, default=100, help="timed LiteRT invocations per thread count")
    args = parser.parse_args(argv)
    epochs, runs = (1, 3) if args.quick else (args.epochs, args.runs)
    title, build, loss, data = model_and_data(args.quick)
    keras.utils.set_random_seed(0)
    dense = trained(build(), loss, data, epochs, [])
    keras.utils.set_random_seed(0)
    sparse = trained(tfprune.sparsify(build()), loss, data, epochs, [tfprune.callbacks.SparsityBudget(TARGET)])
    sparsity = tfprune.sparsity_report(sparse).global_sparsity
    rows, milliseconds = [], {}
    with tempfile.TemporaryDirectory() as directory:
        for name, model, encoded in (("dense", dense, False), ("STR", sparse, False), ("STR", sparse, True)):
            accuracy = model.evaluate(*data[1], verbose=0)[1]
            path = os.path.join(directory, f"{name}_{encoded}.tflite")
            report = tfprune.export.to_tflite(model, path, sparse=encoded, sample_inputs=data[1][0][:32])
            latency = {row["threads"]: row["median_ms"] for row in tfprune.export.benchmark(path, THREADS, runs).latency}
            milliseconds[name, encoded] = latency
            rows.append(
                f"| {name} | {'yes' if encoded else 'no'} | {100 * accuracy:.2f} | {report.size_bytes / 1024:.1f} | "
                f"{report.gzip_size_bytes / 1024:.1f} | {report.max_abs_error:.1e} | "
                + " | ".join(f"{latency[t]:.3f}" for t in THREADS)
                + " |"
            )
            print(rows[-1], flush=True)
    text = [
        SECTION, "",
        f"Command: `{command_line('benchmarks.sparse_deploy', argv)}` ({machine()}; shared with other jobs).", "",
        f"{title} trained {epochs} epoch(s) on digits ({len(data[0][0])} train / {len(data[1][0])} "
        f"test images), Adam 1e-3, batch 64; the STR model reached {sparsity:.1%} sparsity over its STR kernels "
        f"(`SparsityBudget({TARGET})`, every Conv2D/DepthwiseConv2D/Dense). Float32 export; max abs error against "
        f"Keras on 32 test images; latency: median of {runs} single-image invocations (XNNPACK) after 5 warm-up runs.",
        "",
        "| Model | Sparse encoding | Keras test accuracy (%) | Size KiB | gzip KiB | Max abs error | "
        + " | ".join(f"{t} thread{'s' * (t > 1)} ms" for t in THREADS) + " |",
        "| --- | --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in THREADS) + " |",
        *rows, "",
        *[f"Behind the dense model: the sparse-encoded STR file is slower with {t} thread(s) "
          f"({milliseconds['STR', True][t]:.3f} ms vs {milliseconds['dense', False][t]:.3f} ms); the encoding "
          "saves size, not time." for t in THREADS if milliseconds["STR", True][t] > milliseconds["dense", False][t]],
        "",
    ]  # fmt: skip
    write_section(SECTION, "\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
