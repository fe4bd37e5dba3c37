"""LiteRT latency of structurally pruned models next to their MACs ratio, and the time of `tfprune.prune`.

Usage: `.venv/bin/python -m benchmarks.structured_latency [--quick] [--runs N]`.
Writes the `## Structured pruning: LiteRT speed-up` and
`## tfprune.prune time` sections of the results file.

MobileNetV3-Large 224x224 (`tfprune.models.mobilenet_v3`, 1000 classes) is
pruned with `criterion="sparsity_gamma"`, `targets="expansion"` at rates 0.3
and 0.5, and ResNet50 (`keras.applications`, `weights=None`) with
`sparsity_gamma` over all groups at 0.3. Latency depends only on the widths,
not on the values, so instead of a BN-sparsity training run (impossible at
224x224 on this machine) every BatchNormalization γ is drawn from |N(0, 1)|
with a fixed seed, which gives the criterion distinct scores as a trained
model would. Each rate is pruned with `round_to` 1, 4, 8 and 16. Every model
is exported in float32 with `tfprune.export.to_tflite`, and all files of one
architecture are timed together by `tfprune.export.compare_latency`
(invocations interleaved, XNNPACK, 1 and 2 threads). The
speed-up is dense latency / pruned latency; the MACs ratio (dense MACs /
pruned MACs, `tfprune.analyze`) is the ideal speed-up; efficiency is their
quotient, summarised per `round_to` to choose `tfprune.prune`'s default.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import keras
import numpy as np

import tfprune
from benchmarks.common import command_line, machine, write_section

LATENCY_SECTION = "## Structured pruning: LiteRT speed-up"
PRUNE_TIME_SECTION = "## tfprune.prune time"
THREADS = (1, 2)
ROUND_TOS = (1, 4, 8, 16)


def with_random_gammas(model, seed):
    """Sets every BatchNormalization γ of `model` (in place) to |N(0, 1)| draws; returns it."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.gamma is not None:
            layer.gamma.assign(np.abs(rng.standard_normal(layer.gamma.shape)).astype("float32"))
    return model


def cases(quick):
    """(title, builder, prune arguments, rates) of each model; the builders return fresh models."""
    if quick:
        return [("MobileNetV3-Small 64x64 (quick)", lambda: tfprune.models.mobilenet_v3("small", (64, 64, 3), seed=0),
                 dict(criterion="sparsity_gamma", targets="expansion"), (0.5,))]  # fmt: skip
    return [
        ("MobileNetV3-Large 224x224", lambda: tfprune.models.mobilenet_v3("large", (224, 224, 3), classes=1000, seed=0),
         dict(criterion="sparsity_gamma", targets="expansion"), (0.3, 0.5)),
        ("ResNet50 224x224", lambda: keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3)),
         dict(criterion="sparsity_gamma", targets="all"), (0.3,)),
    ]  # fmt: skip


def export_file(model, directory, name):
    """Writes `model` as a float32 `.tflite` file in `directory`; returns its path."""
    path = os.path.join(directory, f"{name}.tflite")
    tfprune.export.to_tflite(model, path, verify=False)
    return path


def efficiency_by_round_to(efficiencies):
    """Median efficiency (speed-up / MACs ratio) per (round_to, threads).

    Args:
        efficiencies: List of (round_to, threads, efficiency) triples.

    Returns:
        Dict mapping (round_to, threads) to the median efficiency.

    Example:

    >>> efficiency_by_round_to([(1, 1, 0.8), (1, 1, 0.9), (8, 1, 0.95)])
    {(1, 1): 0.85, (8, 1): 0.95}
    """
    grouped = {}
    for round_to, threads, efficiency in efficiencies:
        grouped.setdefault((round_to, threads), []).append(efficiency)
    return {key: round(statistics.median(values), 6) for key, values in sorted(grouped.items())}


def behind_the_ideal(efficiencies):
    """One sentence saying how far the measured speed-ups fall short of the MACs ratios.

    Args:
        efficiencies: List of (case description, speed-up / MACs ratio) pairs.

    Returns:
        A Markdown sentence naming the least and most efficient cases.

    Example:

    >>> behind_the_ideal([("a", 0.9), ("b", 0.8)])
    'Behind the ideal: the measured speed-up is 80% (b) to 90% (a) of the MACs ratio; 2 of 2 cases below 100%.'
    """
    (low_case, low), (high_case, high) = min(efficiencies, key=lambda e: e[1]), max(efficiencies, key=lambda e: e[1])
    below = sum(efficiency < 1 for _, efficiency in efficiencies)
    return (
        f"Behind the ideal: the measured speed-up is {low:.0%} ({low_case}) to {high:.0%} ({high_case}) of the "
        f"MACs ratio; {below} of {len(efficiencies)} cases below 100%."
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MobileNetV3-Small 64x64 at rate 0.5, 3 runs")
    parser.add_argument("--runs", type=int, default=50, help="timed rounds of interleaved LiteRT invocations")
    parser.add_argument("--prune-repeats", type=int, default=3, help="timed prune calls per rate")
    args = parser.parse_args(argv)
    runs, repeats = (3, 1) if args.quick else (args.runs, args.prune_repeats)
    round_tos = (1, 8) if args.quick else ROUND_TOS
    latency_rows, prune_rows, efficiencies, by_round_to = [], [], [], []
    with tempfile.TemporaryDirectory() as directory:
        for title, build, prune_arguments, rates in cases(args.quick):
            dense = with_random_gammas(build(), seed=0)
            dense_macs = tfprune.analyze(dense).macs
            paths = {"dense": export_file(dense, directory, "dense")}
            variants = []  # (rate, round_to, result)
            for rate in rates:
                seconds = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    tfprune.prune(dense, rate=rate, **prune_arguments)
                    seconds.append(time.perf_counter() - start)
                prune_rows.append(
                    f"| {title} | {prune_arguments['criterion']} | {prune_arguments['targets']} | {rate} | "
                    f"{len(dense.layers)} | {statistics.median(seconds):.2f} | {', '.join(f'{s:.2f}' for s in seconds)} |"
                )
                for round_to in round_tos:
                    pruned, result = tfprune.prune(dense, rate=rate, round_to=round_to, **prune_arguments)
                    paths[(rate, round_to)] = export_file(pruned, directory, f"pruned_{rate}_{round_to}")
                    variants.append((rate, round_to, result))
                    keras.backend.clear_session()
            # Every file of this model in the same rounds: the ratios are measured under one load.
            medians = {t: tfprune.export.compare_latency(paths, threads=t, runs=runs) for t in THREADS}
            latency_rows.append(
                f"| {title} | dense | | {dense.count_params():,} | {dense_macs / 1e6:.1f} M | "
                + " | ".join(f"{medians[t]['dense']:.2f}" for t in THREADS)
                + " | | " + " | ".join("" for _ in THREADS) + " |"
            )
            for rate, round_to, result in variants:
                ideal = result.macs_before / result.macs_after
                speedups = {t: medians[t]["dense"] / medians[t][(rate, round_to)] for t in THREADS}
                for t in THREADS:
                    efficiencies.append((f"{title} at rate {rate}, round_to={round_to}, {t} thread(s)", speedups[t] / ideal))
                    by_round_to.append((round_to, t, speedups[t] / ideal))
                latency_rows.append(
                    f"| {title} | {rate} | {round_to} | {result.params_after:,} | {result.macs_after / 1e6:.1f} M | "
                    + " | ".join(f"{medians[t][(rate, round_to)]:.2f}" for t in THREADS)
                    + f" | {ideal:.2f} | "
                    + " | ".join(f"{speedups[t]:.2f} ({speedups[t] / ideal:.0%})" for t in THREADS)
                    + " |"
                )
                print(latency_rows[-1], flush=True)
            keras.backend.clear_session()
    setting = f"Command: `{command_line('benchmarks.structured_latency', argv)}` ({machine()}; shared with other jobs)."
    thread_headers = " | ".join(f"{t} thread{'s' * (t > 1)} ms" for t in THREADS)
    speedup_headers = " | ".join(f"speed-up {t}t (efficiency)" for t in THREADS)
    summary = efficiency_by_round_to(by_round_to)
    summary_rows = [
        f"| {round_to} | " + " | ".join(f"{summary[(round_to, t)]:.0%}" for t in THREADS) + " |" for round_to in round_tos
    ]
    latency_text = [
        LATENCY_SECTION, "", setting, "",
        f"LiteRT float32, delegate XNNPACK, {runs} rounds after 5 warm-up rounds; each round invokes the dense file "
        "and every pruned file of the model once (`tfprune.export.compare_latency`), so all of a model's files are "
        "timed under the same load; medians of single-image invocations. Pruned with "
        "`tfprune.prune(model, criterion, rate, targets, round_to=...)`; BN γ drawn from |N(0, 1)| (seed 0) in place "
        "of a BN-sparsity training run, since only the widths matter for latency. 'MACs ratio' = dense MACs / "
        "pruned MACs (the ideal speed-up); speed-up = dense ms / pruned ms; efficiency = speed-up / MACs ratio "
        "(below 100%: the runtime gains less than the MACs removed).",
        "",
        f"| Model | Rate | round_to | Params | MACs | {thread_headers} | MACs ratio | {speedup_headers} |",
        "| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in THREADS) + " | ---: | "
        + " | ".join("---:" for _ in THREADS) + " |",
        *latency_rows, "",
        "Median efficiency over the rows above, by `round_to` (this is how tfprune.prune's default `round_to` is chosen):",
        "",
        "| round_to | " + " | ".join(f"efficiency {t}t" for t in THREADS) + " |",
        "| ---: | " + " | ".join("---:" for _ in THREADS) + " |",
        *summary_rows, "",
        behind_the_ideal(efficiencies), "",
    ]  # fmt: skip
    prune_text = [
        PRUNE_TIME_SECTION, "", setting, "",
        f"Wall time of one `tfprune.prune` call (scoring, width choice, surgery and `analyze` of both models), "
        f"median of {repeats}; the channel-surgery scaling with depth is in the 'Channel surgery time' section.",
        "",
        "| Model | Criterion | Targets | Rate | Layers | Median s | All runs s |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
        *prune_rows, "",
    ]  # fmt: skip
    write_section(LATENCY_SECTION, "\n".join(latency_text))
    write_section(PRUNE_TIME_SECTION, "\n".join(prune_text))
    print("\n".join(latency_text + prune_text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
