"""How long channel surgery takes: MobileNetV3-Large, and growth with depth.

Usage: `.venv/bin/python -m benchmarks.surgery_time [--quick]`. Writes the
`## Channel surgery time` section of `benchmarks/RESULTS.md`. Each case
removes 30% of the channels of every prunable group (random choice) and times
`tfprune.graph.build` and `tfprune.surgery.remove_channels` (which builds the
graph again and clones the model with sliced weights); best of the repeats.
"""

import argparse
import os
import platform
import sys
import time

import keras
import numpy as np

import tfprune
from benchmarks.common import write_section

SECTION = "## Channel surgery time"


def residual_net(blocks, width=16):
    """A plain residual net: stem, `blocks` x (conv-BN-ReLU-conv-BN-add-ReLU), head."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(width, 3, padding="same")(inputs)
    for _ in range(blocks):
        y = keras.layers.Conv2D(width, 3, padding="same")(x)
        y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
        y = keras.layers.BatchNormalization()(keras.layers.Conv2D(width, 3, padding="same")(y))
        x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def thirty_percent(graph, rng):
    return {
        group.name: rng.choice(group.size, int(0.3 * group.size), replace=False)
        for group in graph.groups
        if group.prunable and 0 < int(0.3 * group.size) < group.size
    }


def measure(model, repeats):
    """Best-of-`repeats` seconds of keras.models.clone_model, graph.build and remove_channels.

    The minimum, not the median: the machine is shared, and other jobs only
    ever add time.
    """
    clone_times, build_times, surgery_times = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        keras.models.clone_model(model)
        clone_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        graph = tfprune.graph.build(model)
        build_times.append(time.perf_counter() - start)
        removals = thirty_percent(graph, np.random.default_rng(0))
        start = time.perf_counter()
        small = tfprune.surgery.remove_channels(model, removals)
        surgery_times.append(time.perf_counter() - start)
    return [min(times) for times in (clone_times, build_times, surgery_times)], small


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 50 blocks, 1 repeat")
    args = parser.parse_args(argv)
    load_average = os.getloadavg()[0]
    repeats = 1 if args.quick else 5
    depths = (10, 50) if args.quick else (10, 50, 200)
    command = ".venv/bin/python -m benchmarks.surgery_time" + (" --quick" if args.quick else "")
    rows = []
    cases = [("MobileNetV3-Large 224x224", lambda: keras.applications.MobileNetV3Large(weights=None))]
    cases += [(f"residual net, {blocks} blocks", lambda blocks=blocks: residual_net(blocks)) for blocks in depths]
    for name, constructor in cases:
        keras.backend.clear_session()
        model = constructor()
        (clone_seconds, build_seconds, surgery_seconds), small = measure(model, repeats)
        layers = len(model.layers)
        rows.append(
            f"| {name} | {layers} | {model.count_params():,} | {small.count_params():,} | "
            f"{clone_seconds:.2f} | {build_seconds * 1000:.0f} | {surgery_seconds:.2f} | "
            f"{surgery_seconds / layers * 1000:.1f} |"
        )
        print(rows[-1], flush=True)
    text = (
        f"{SECTION}\n\n"
        f"Command: `{command}` ({platform.machine()}, 2 cores shared with other jobs, best of {repeats}; "
        f"Keras {keras.__version__}). Each case removes 30% of the channels of every prunable group. "
        "`remove_channels` includes building the graph again and cloning the model with sliced weights; "
        "`keras.models.clone_model` (no pruning) is the floor any rebuild pays. "
        "Target: MobileNetV3-Large under 2 s, time per layer flat as depth grows.\n\n"
        f"Load average at the start: {load_average:.1f}.\n\n"
        "| Model | Layers | Params | Params after | clone_model s | graph.build ms | remove_channels s "
        "| remove_channels ms per layer |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n"
    )
    write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
