"""How long `tfprune.analyze` takes, and its MACs next to the published figures.

Usage: `.venv/bin/python -m benchmarks.analysis_cost [--quick]`. Writes the
`## Analysis` section of `benchmarks/RESULTS.md`.
"""

import argparse
import platform
import sys
import time

import keras
import numpy as np

import tfprune
from benchmarks.common import write_section

SECTION = "## Analysis"

# (builder, published MACs, source); all at 224x224x3 with 1000 classes.
MODELS = {
    "MobileNetV3Large": (
        keras.applications.MobileNetV3Large,
        217e6,
        "Keras MobileNetV3 docstring table",
    ),
    "MobileNetV2": (keras.applications.MobileNetV2, 300e6, "Sandler et al. 2018, Table 4"),
    "ResNet50": (keras.applications.ResNet50, 3.8e9, "He et al. 2016, Table 1"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MobileNetV3Large only, 1 repeat")
    args = parser.parse_args(argv)
    names = ["MobileNetV3Large"] if args.quick else list(MODELS)
    repeats = 1 if args.quick else 5
    rows = []
    for name in names:
        build, published, source = MODELS[name]
        model = build(weights=None, input_shape=(224, 224, 3))
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = tfprune.analyze(model)
            seconds.append(time.perf_counter() - start)
        rows.append(
            f"| {name} | {result.params:,} | {result.macs / 1e6:,.1f} M | "
            f"{published / 1e6:,.0f} M ({source}) | {100 * (result.macs / published - 1):+.1f}% | "
            f"{1000 * float(np.median(seconds)):.0f} ms |"
        )
        print(rows[-1], flush=True)
        keras.backend.clear_session()
    command = " ".join([".venv/bin/python -m benchmarks.analysis_cost", *(argv or sys.argv[1:])])
    text = "\n".join(
        [
            SECTION,
            "",
            f"Command: `{command}` ({platform.processor() or platform.machine()}, "
            f"median of {repeats}, 224x224x3 inputs, `weights=None`).",
            "MACs count conv and dense kernel multiply-accumulates per image; FLOPs = 2 x MACs.",
            "",
            "| Model | Params | MACs (tfprune) | MACs (published) | Difference | analyze() time |",
            "| --- | ---: | ---: | --- | ---: | ---: |",
            *rows,
            "",
        ]
    )
    write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
