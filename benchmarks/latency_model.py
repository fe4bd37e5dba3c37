"""How well `tfprune.latency` predicts the LiteRT latency of pruned models.

Usage: `.venv/bin/python -m benchmarks.latency_model [--quick] [--models ...] [--threads 1,2]`.
Writes the `## Latency model: predicted against measured LiteRT latency` section.

For each model, `--fit` width combinations (`tfprune.latency.sample_widths`,
seed 0: the full model, a quarter with every group at one share, the rest
with independent shares in [0.25, 1], widths multiples of 8) and `--check`
others (seed 1, the full model left out) are made with
`tfprune.surgery.set_widths` over every prunable group and exported in
float32. All files of a model are timed together by
`tfprune.export.compare_latency` (each round invokes every file once;
XNNPACK), per thread count. The latency model is fitted to the first set and
judged on the second: the share of combinations predicted within 10% of
their measured time, and the median and largest error. For contrast, the
same for the MACs proxy (dense latency x MACs ratio).
"""

import argparse
import statistics
import tempfile
import time

import keras

import tfprune
from benchmarks.common import command_line, machine, write_section
from tfprune import latency

SECTION = "## Latency model: predicted against measured LiteRT latency"


def _small_cnn():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(64, 1, activation="relu", name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="fc")(x))


def cases(quick):
    """(title, builder) of each model; the builders return fresh models."""
    if quick:
        return {"small CNN 32x32 (quick)": _small_cnn}
    return {
        "MobileNetV3-Small 224x224": lambda: tfprune.models.mobilenet_v3("small", (224, 224, 3), classes=1000, seed=0),
        "MobileNetV3-Large 224x224": lambda: tfprune.models.mobilenet_v3("large", (224, 224, 3), classes=1000, seed=0),
        "ResNet50 224x224": lambda: keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3)),
    }


def errors(predicted, measured):
    """Relative errors `predicted / measured - 1`.

    Example:

    >>> errors([1.1, 0.9], [1.0, 1.0])
    [0.1, -0.1]
    """
    return [round(p / m - 1, 12) for p, m in zip(predicted, measured)]


def summary(relative):
    """`(share within 10%, median |error|, largest |error|)` of relative errors.

    Example:

    >>> summary([0.05, -0.2, 0.01])
    (0.6666666666666666, 0.05, 0.2)
    """
    magnitudes = [abs(value) for value in relative]
    return sum(value <= 0.10 for value in magnitudes) / len(magnitudes), statistics.median(magnitudes), max(magnitudes)


def run_case(builder, fit, check, threads, runs, directory):
    model = builder()
    graph = tfprune.graph.build(model)
    names = [group.name for group in graph.groups if group.prunable]
    sizes = {name: graph[name].size for name in names}
    fit_widths = latency.sample_widths(sizes, fit, seed=0)
    check_widths = latency.sample_widths(sizes, check + 1, seed=1)[1:]
    paths, macs = [], []
    for index, widths in enumerate(fit_widths + check_widths):
        pruned = model if index == 0 else tfprune.surgery.set_widths(model, widths)
        path = f"{directory}/sample_{index:03d}.tflite"
        tfprune.export.to_tflite(pruned, path, verify=False, verbose=False)
        paths.append(path)
        macs.append(tfprune.analyze(pruned).macs)
    rows = []
    for count in threads:
        times = tfprune.export.compare_latency({path: path for path in paths}, threads=count, runs=runs)
        measured = [times[path] for path in paths]
        fitted = latency.fit_latency_model(
            model, list(zip(fit_widths, measured[:fit])), groups=names, threads=count, graph=graph
        )
        predicted = [fitted.of_widths(widths) for widths in check_widths]
        by_macs = [measured[0] * value / macs[0] for value in macs[fit:]]
        rows.append((count, len(names), measured[0], summary(errors(predicted, measured[fit:])),
                     summary(errors(by_macs, measured[fit:]))))  # fmt: skip
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small CNN 32x32, 6 + 4 combinations, 3 runs")
    parser.add_argument("--models", default=None, help="comma-separated titles (default: all)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--fit", type=int, default=24, help="combinations the model is fitted to")
    parser.add_argument("--check", type=int, default=50, help="combinations it is judged on")
    parser.add_argument("--runs", type=int, default=30, help="timed rounds of interleaved invocations")
    args = parser.parse_args(argv)
    fit, check, runs = (6, 4, 3) if args.quick else (args.fit, args.check, args.runs)
    threads = [int(count) for count in args.threads.split(",")]
    chosen = cases(args.quick)
    if args.models:
        chosen = {title: chosen[title] for title in args.models.split(",")}
    lines = []
    started = time.time()
    for title, builder in chosen.items():
        with tempfile.TemporaryDirectory() as directory:
            for count, groups, dense, (within, median, largest), (m_within, m_median, m_largest) in run_case(
                builder, fit, check, threads, runs, directory
            ):
                lines.append(
                    f"| {title} | {groups} | {count} | {dense:.2f} | {within:.0%} | {100 * median:.1f}% | "
                    f"{100 * largest:.1f}% | {m_within:.0%} | {100 * m_median:.1f}% | {100 * m_largest:.1f}% |"
                )
                print(lines[-1], flush=True)
    text = (
        f"{SECTION}\n\n"
        f"Command: `{command_line('benchmarks.latency_model', argv)}` ({machine()}; Keras {keras.__version__}; "
        f"{(time.time() - started) / 60:.0f} min).\n"
        f"{__doc__.split(chr(10) + chr(10), 2)[2].strip()} Fitted to {fit} combinations, judged on {check}, "
        f"{runs} interleaved rounds.\n\n"
        "| Model | Groups varied | Threads | Dense (ms) | Latency model: within 10% | median error | largest | "
        "MACs proxy: within 10% | median error | largest |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(lines) + "\n"
    )
    write_section(SECTION, text)


if __name__ == "__main__":
    main()
