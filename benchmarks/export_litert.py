"""TFLite/LiteRT export of a digits MobileNetV3-Small: size, error and latency per mode.

Usage: `.venv/bin/python -m benchmarks.export_litert [--quick]`. Writes the
`## Export (LiteRT)` section of `benchmarks/RESULTS.md`.

A MobileNetV3-Small (32x32x3, `tfprune.models.mobilenet_v3`) is trained
briefly on the offline digits data, then exported with every `quantize` mode
by `tfprune.export.to_tflite`, verified on the digits test images and timed
with `tfprune.export.benchmark`. A copy whose conv/dense kernels have their
smallest 90% set to exactly zero and fine-tuned with the zeros kept (what a
stripped STR model looks like) is exported with and without the sparsity
encoding.
"""

import argparse
import os
import platform
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

import tfprune
from benchmarks.common import write_section
from tfprune import export

SECTION = "## Export (LiteRT)"
SPARSITY = 0.9


class KeepZeros(keras.callbacks.Callback):
    """Re-applies fixed 0/1 masks to kernels after every training step."""

    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def on_train_batch_end(self, batch, logs=None):
        for variable, mask in self.masks:
            variable.assign(variable * mask)


def zeroed_copy(model, sparsity):
    """Returns a copy of `model` whose kernels have their smallest `sparsity` fraction set to 0.

    Also returns the (variable, mask) pairs that `KeepZeros` needs for fine-tuning.
    """
    copy = tfprune.strip(model)  # a clone with the weights copied
    masks = []
    for layer in copy.layers:
        for variable in layer.weights:
            if variable.path.endswith("kernel"):
                values = keras.ops.convert_to_numpy(variable)
                mask = (np.abs(values) >= np.quantile(np.abs(values), sparsity)).astype(
                    values.dtype
                )
                variable.assign(values * mask)
                masks.append((variable, mask))
    return copy, masks


def compiled(model):
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(),  # the model ends in a softmax
        metrics=["accuracy"],
    )
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch each, 10 timed runs")
    args = parser.parse_args(argv)
    epochs, fine_tune_epochs, runs = (1, 1, 10) if args.quick else (6, 4, 100)

    (train_images, train_labels), (test_images, test_labels) = tfprune.datasets.digits(
        image_size=32, channels=3, as_numpy=True
    )
    model = compiled(tfprune.models.mobilenet_v3("small", seed=0))
    model.fit(train_images, train_labels, batch_size=64, epochs=epochs, verbose=0)
    sparse_model, masks = zeroed_copy(model, SPARSITY)
    compiled(sparse_model).fit(
        train_images,
        train_labels,
        batch_size=64,
        epochs=fine_tune_epochs,
        verbose=0,
        callbacks=[KeepZeros(masks)],
    )
    accuracy = {
        "dense": model.evaluate(test_images, test_labels, verbose=0)[1],
        f"{SPARSITY:.0%} zeros": sparse_model.evaluate(test_images, test_labels, verbose=0)[1],
    }
    variants = [
        ("dense", model, None, False),
        ("dense", model, "dynamic", False),
        ("dense", model, "float16", False),
        ("dense", model, "int8", False),
        (f"{SPARSITY:.0%} zeros", sparse_model, None, True),
        (f"{SPARSITY:.0%} zeros", sparse_model, "int8", True),
    ]
    rows, latencies = [], {}
    with tempfile.TemporaryDirectory() as directory:
        for index, (name, variant, quantize, sparse) in enumerate(variants):
            path = os.path.join(directory, f"model_{index}.tflite")
            report = export.to_tflite(
                variant,
                path,
                quantize=quantize,
                representative_data=train_images[:256],
                sparse=sparse,
                sample_inputs=test_images,
            )
            bench = export.benchmark(path, threads=(1, 2), runs=runs, warmup=10)
            rows.append(row(name, report, bench))
            latencies[name, quantize or "none"] = {entry["threads"]: entry["median_ms"] for entry in bench.latency}
            print(rows[-1], flush=True)

    command = ".venv/bin/python -m benchmarks.export_litert" + (" --quick" if args.quick else "")
    text = "\n".join(
        [
            SECTION,
            "",
            f"Command: `{command}` ({platform.machine()}, {os.cpu_count()} cores shared with other "
            f"jobs; TensorFlow {tf.__version__}, LiteRT interpreter from "
            "`ai_edge_litert`).",
            f"MobileNetV3-Small 32x32x3 (`tfprune.models.mobilenet_v3('small', seed=0)`), trained "
            f"{epochs} epoch(s) on the digits train split; Keras test accuracy: "
            + ", ".join(f"{key} {value:.3f}" for key, value in accuracy.items())
            + f". The '{SPARSITY:.0%} zeros' model is the same network with the smallest "
            f"{SPARSITY:.0%} of every kernel set to 0, then fine-tuned "
            f"{fine_tune_epochs} epoch(s) with those zeros kept (it stands in for a stripped STR "
            "model). Error and top-1 agreement: TFLite vs Keras on the 360 test "
            f"images. Latency: median of {runs} single-image invocations after 10 warm-up runs. "
            "Peak RSS: a fresh Python process that imports `ai_edge_litert`, loads the file and "
            "runs it once.",
            "",
            "| Model | quantize | sparse encoding | size KiB | gzip KiB | without encoding KiB "
            "| max abs error | top-1 agreement | delegate | 1 thread ms | 2 threads ms | peak RSS MiB |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
            *rows,
            "",
            *slower_than_dense(latencies),
        ]
    )
    write_section(SECTION, text)
    print(text)
    return 0


def slower_than_dense(latencies):
    """Sentences naming every sparse-encoded export that is slower than the dense file of the same quantization.

    Args:
        latencies: Dict (model name, quantize) -> {threads: median ms}; the dense model is named "dense".

    Returns:
        List of Markdown lines (a heading line, the sentences, a blank line), or `[]` when
        no sparse file is slower.

    Example:

    >>> slower_than_dense({("dense", "none"): {1: 1.0}, ("sparse", "none"): {1: 1.5}})[1]
    '- sparse (quantize none), 1 thread(s): 1.500 ms vs 1.000 ms dense (1.50x).'
    """
    sentences = []
    for (name, quantize), medians in latencies.items():
        dense = latencies.get(("dense", quantize))
        if name == "dense" or dense is None:
            continue
        for threads, median in medians.items():
            if median > dense[threads]:
                sentences.append(
                    f"- {name} (quantize {quantize}), {threads} thread(s): {median:.3f} ms vs "
                    f"{dense[threads]:.3f} ms dense ({median / dense[threads]:.2f}x)."
                )
    if not sentences:
        return []
    return ["Where the zeros are behind the dense model in latency (XNNPACK runs dense kernels; the encoding saves size):",
            *sentences, ""]  # fmt: skip


def row(name, report, bench):
    """One Markdown table row for an export and its benchmark."""
    kib = 1024
    without = "" if report.dense_size_bytes is None else f"{report.dense_size_bytes / kib:.1f}"
    median = {entry["threads"]: entry["median_ms"] for entry in bench.latency}
    memory = "n/a" if bench.peak_rss_bytes is None else f"{bench.peak_rss_bytes / 2**20:.1f}"
    cells = [
        name,
        report.quantize or "none",
        "yes" if report.sparse else "no",
        f"{report.size_bytes / kib:.1f}",
        f"{report.gzip_size_bytes / kib:.1f}",
        without,
        f"{report.max_abs_error:.2g}",
        f"{report.top1_agreement:.3f}",
        bench.delegate,
        f"{median[1]:.3f}",
        f"{median[2]:.3f}",
        memory,
    ]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    sys.exit(main())
