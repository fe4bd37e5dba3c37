"""Training step time of STR layers vs plain Keras layers (issue 3).

Builds `keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32,
3), classes=10)` and `tfprune.sparsify` of it (every Conv2D, DepthwiseConv2D
and Dense an STR layer), compiles both the same way (SGD, `jit_compile` left
at Keras's "auto") and times `train_on_batch` on one fixed batch. Runs
alternate between the two models so that load from other processes hits both
alike; the reported figure is the median over runs of the per-step time, and
the ratio STR/plain of those medians; process CPU time is reported beside
it because it is less disturbed by other jobs on a shared machine. Optionally also measures the file sizes
of a 90%-sparse stripped model converted to TFLite with and without
`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`.

    .venv/bin/python -m benchmarks.str_step_time --runs 9 --steps 10 --write

`--write` replaces the "## STR" section of benchmarks/RESULTS.md.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune  # noqa: E402
from benchmarks.common import command_line, write_section  # noqa: E402

SECTION = "## STR: step time and sparse TFLite size (issue 3)"


def build(sparse, seed):
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=10)
    if sparse:
        model = tfprune.sparsify(model)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), keras.losses.SparseCategoricalCrossentropy())
    return model


def time_steps(model, images, labels, steps):
    """Returns (wall-clock, process CPU) seconds per step."""
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return (time.perf_counter() - start) / steps, (time.process_time() - start_cpu) / steps


def step_times(runs, steps, batch_size):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(batch_size, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, size=(batch_size,))
    models = {"plain": build(False, 0), "str": build(True, 0)}
    for model in models.values():  # trace and compile before timing
        time_steps(model, images, labels, 5)
    times = {name: [] for name in models}
    cpu_times = {name: [] for name in models}
    for run in range(runs):
        order = list(models) if run % 2 == 0 else list(reversed(list(models)))
        for name in order:
            wall, cpu = time_steps(models[name], images, labels, steps)
            times[name].append(wall)
            cpu_times[name].append(cpu)
    return times, cpu_times, models["str"].jit_compile


def tflite_sizes():
    import tensorflow as tf

    from tfprune.callbacks.sparsity_budget import common_threshold_scale
    from tfprune.sparsity import str_layers

    model = tfprune.sparsify(
        keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=10)
    )
    layers = str_layers(model)
    scale = common_threshold_scale(layers, 0.9)
    for layer in layers:
        layer.scale_thresholds(scale)
    sparsity = tfprune.sparsity_report(model).global_sparsity
    plain = tfprune.strip(model)
    sizes = {}
    for name, optimizations in (("dense", []), ("sparse", [tf.lite.Optimize.EXPERIMENTAL_SPARSITY])):
        converter = tf.lite.TFLiteConverter.from_keras_model(plain)
        converter.optimizations = optimizations
        sizes[name] = len(converter.convert())
    return sparsity, sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-tflite", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes: 2 runs x 2 steps, no TFLite")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.runs, arguments.steps, arguments.skip_tflite = 2, 2, True

    times, cpu_times, jit_compile = step_times(arguments.runs, arguments.steps, arguments.batch_size)
    plain = statistics.median(times["plain"])
    sparse = statistics.median(times["str"])
    # Each run times both models back to back: the per-run ratio cancels most
    # of the load that other processes put on the shared cores.
    paired = statistics.median(s / p for s, p in zip(times["str"], times["plain"]))
    lines = [
        SECTION,
        "",
        f"Command: `{command_line('benchmarks.str_step_time')}`",
        f"(nproc={os.cpu_count()}, load average at the end: {os.getloadavg()[0]:.1f}; "
        "the machine is shared, so absolute times are noisy, the interleaved ratio less so).",
        "",
        f"MobileNetV3-Small 32x32, batch {arguments.batch_size}, `train_on_batch`, "
        f"median of {arguments.runs} runs x {arguments.steps} steps "
        f"(`jit_compile=\"auto\"` resolved to {jit_compile}):",
        "",
        "| model | median step (ms) | all runs (ms) |",
        "|---|---|---|",
        f"| plain Keras | {1000 * plain:.1f} | {', '.join(f'{1000 * t:.1f}' for t in times['plain'])} |",
        f"| `tfprune.sparsify` (STR) | {1000 * sparse:.1f} | {', '.join(f'{1000 * t:.1f}' for t in times['str'])} |",
        f"| plain Keras, process CPU time | {1000 * statistics.median(cpu_times['plain']):.1f} | "
        f"{', '.join(f'{1000 * t:.1f}' for t in cpu_times['plain'])} |",
        f"| STR, process CPU time | {1000 * statistics.median(cpu_times['str']):.1f} | "
        f"{', '.join(f'{1000 * t:.1f}' for t in cpu_times['str'])} |",
        "",
        f"**Step-time ratio STR/plain: {sparse / plain:.3f}** (wall clock, ratio of the medians; "
        f"target <= 1.15). Median of the per-run ratios: {paired:.3f}; ratio of the fastest runs: "
        f"{min(times['str']) / min(times['plain']):.3f}; ratio of the median process CPU times "
        f"(less sensitive to the other jobs on the machine): "
        f"{statistics.median(cpu_times['str']) / statistics.median(cpu_times['plain']):.3f}.",
    ]
    if not arguments.skip_tflite:
        sparsity, sizes = tflite_sizes()
        lines += [
            "",
            f"TFLite file of `tfprune.strip` of the same model at {sparsity:.1%} STR sparsity "
            "(untrained weights, thresholds set by `common_threshold_scale`), float32:",
            "",
            "| converter | bytes |",
            "|---|---|",
            f"| `TFLiteConverter.from_keras_model` | {sizes['dense']:,} |",
            f"| + `optimizations=[tf.lite.Optimize.EXPERIMENTAL_SPARSITY]` | {sizes['sparse']:,} "
            f"({sizes['sparse'] / sizes['dense']:.2f}x) |",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not arguments.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
