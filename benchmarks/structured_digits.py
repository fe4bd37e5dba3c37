"""Structured pruning of MobileNetV3 on the offline digits data (or Fashion-MNIST), criteria side by side.

One sparse training (`BNSparsity` at its defaults on the expansion channels:
the proximal channel penalty of issue 15), then
for each criterion: prune the expansion convs at `--rate` (the MobileNetV3
method of Liu & Lei), fine-tune, evaluate. The "scratch" row is the
Rethinking baseline (Liu et al. 2019): the `sparsity_gamma` architecture with
fresh weights, trained for as many epochs as sparse training plus fine-tuning.

A dense reference (the same network and epochs without the channel penalty)
is trained too, so that "vs dense" is the cost of the whole recipe.

Usage: `.venv/bin/python -m benchmarks.structured_digits [--quick] [--data fashion-mnist]
[--train-size N]`. Writes the "## Structured pruning (digits)" (or "(Fashion-MNIST)")
section of benchmarks/RESULTS.md (not with --quick).
"""

import argparse
import platform
import sys
import time

import keras
import numpy as np

import tfprune
from benchmarks.common import DATA_SETS, DATA_TITLES, image_data, write_section

# criterion -> scope: filter L1 norms grow with a layer's fan-in, so Li et al. rank
# them inside each layer; the others use one global threshold.
CRITERIA = {"sparsity_gamma": "global", "bn_gamma": "global", "l1": "group", "random": "global"}


def _compile(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _accuracy(model, test):
    return float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])


def _train(model, train, epochs, learning_rate, callbacks=()):
    _compile(model, learning_rate)
    start = time.perf_counter()
    model.fit(train, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return time.perf_counter() - start


def run(args):
    """Runs the whole comparison; returns a list of row dicts and the dense accuracy."""
    train, test = image_data(args.data, 32, batch_size=64, seed=args.seed, train_size=args.train_size)
    if args.quick:  # a smoke run: 4 training and 2 test batches keep it under a minute or two
        train, test = train.take(4), test.take(2)
    dense = tfprune.models.mobilenet_v3(args.variant, input_shape=(32, 32, 3), seed=args.seed)
    seconds = _train(dense, train, args.epochs + args.fine_tune_epochs, args.learning_rate)
    dense_accuracy = _accuracy(dense, test)
    print(f"dense: {seconds:.0f} s, test accuracy {dense_accuracy:.4f}", flush=True)
    model = tfprune.models.mobilenet_v3(args.variant, input_shape=(32, 32, 3), seed=args.seed)
    sparsity = tfprune.callbacks.BNSparsity(args.l1, targets="expansion", thresholds=(1e-2, 1e-1))
    seconds = _train(model, train, args.epochs, args.learning_rate, [sparsity])
    sparse_accuracy = _accuracy(model, test)
    statistics = sparsity.gamma_statistics()
    print(f"sparse training: {seconds:.0f} s, test accuracy {sparse_accuracy:.4f}, {statistics}", flush=True)

    rows = []
    for criterion, scope in CRITERIA.items():
        keras.utils.set_random_seed(args.seed)
        pruned, result = tfprune.prune(
            model, criterion, rate=args.rate, scope=scope, targets="expansion", seed=args.seed,
            round_to=1,  # exact rates: criteria are compared at the same widths
        )
        before_fine_tune = _accuracy(_compile(pruned, args.learning_rate), test)
        seconds = _train(pruned, train, args.fine_tune_epochs, args.learning_rate)
        rows.append(
            dict(
                name=f"{criterion} ({scope})",
                result=result,
                before_fine_tune=before_fine_tune,
                accuracy=_accuracy(pruned, test),
                seconds=seconds,
            )
        )
        print(rows[-1]["name"], rows[-1]["before_fine_tune"], rows[-1]["accuracy"], flush=True)

    keras.utils.set_random_seed(args.seed)
    scratch, result = tfprune.prune(
        model, "sparsity_gamma", rate=args.rate, targets="expansion", reinitialize=True, round_to=1
    )
    seconds = _train(scratch, train, args.epochs + args.fine_tune_epochs, args.learning_rate)
    rows.append(
        dict(
            name="scratch (sparsity_gamma widths, fresh weights)",
            result=result,
            before_fine_tune=None,
            accuracy=_accuracy(scratch, test),
            seconds=seconds,
        )
    )
    print(rows[-1]["name"], rows[-1]["accuracy"], flush=True)
    return rows, sparse_accuracy, statistics, dense_accuracy


def section(data):
    """The RESULTS.md heading of a data set's section."""
    return f"## Structured pruning ({DATA_TITLES[data]})"


def _format(rows, sparse_accuracy, statistics, args, command, dense_accuracy):
    sizes = ("1437 train / 360 test" if args.data == "digits"
             else f"{args.train_size or 60000} train / 10000 test")  # fmt: skip
    lines = [
        section(args.data),
        "",
        f"Command: `{command}` (x86_64, {platform.python_version()}, 2 cores shared with other jobs; "
        f"Keras {keras.__version__}).",
        f"`tfprune.models.mobilenet_v3({args.variant!r}, input_shape=(32, 32, 3), seed={args.seed})` on "
        f"{DATA_TITLES[args.data]} at 32x32 ({sizes}). Dense reference: the same network trained "
        f"{args.epochs + args.fine_tune_epochs} epochs without the penalty, test accuracy "
        f"**{100 * dense_accuracy:.2f}%**. Sparse training: "
        f"{args.epochs} epochs, Adam {args.learning_rate}, `BNSparsity({args.l1}, targets='expansion')` "
        "(proximal channel penalty); "
        f"test accuracy **{100 * sparse_accuracy:.2f}%**; share of targeted |γ| < 0.01: "
        f"{100 * statistics['bn_gamma_below_0.01']:.1f}%, < 0.1: {100 * statistics['bn_gamma_below_0.1']:.1f}%. "
        f"Then `tfprune.prune(model, criterion, rate={args.rate}, scope=..., targets='expansion', round_to=1)` "
        "(scope in brackets; a group never loses all channels) and "
        f"{args.fine_tune_epochs} fine-tuning epochs (Adam {args.learning_rate}). The scratch row trains "
        f"the sparsity_gamma architecture from fresh weights for {args.epochs + args.fine_tune_epochs} epochs.",
        "",
        "| Criterion | Params | MACs | Acc. before fine-tune (%) | Test acc. (%) | vs unpruned (points) "
        "| vs dense (points) | Train time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    first = rows[0]["result"]
    lines.append(
        f"| unpruned (sparse-trained) | {first.params_before:,} | {first.macs_before / 1e6:.2f} M | – | "
        f"{100 * sparse_accuracy:.2f} | – | {100 * (sparse_accuracy - dense_accuracy):+.2f} | – |"
    )
    for row in rows:
        result = row["result"]
        before = "–" if row["before_fine_tune"] is None else f"{100 * row['before_fine_tune']:.2f}"
        lines.append(
            f"| {row['name']} | {result.params_after:,} (-{100 * result.params_reduction:.1f}%) | "
            f"{result.macs_after / 1e6:.2f} M (-{100 * result.macs_reduction:.1f}%) | {before} | "
            f"{100 * row['accuracy']:.2f} | {100 * (row['accuracy'] - sparse_accuracy):+.2f} | "
            f"{100 * (row['accuracy'] - dense_accuracy):+.2f} | {row['seconds']:.0f} |"
        )
    lines += [
        "",
        ("One seed; the test split has 360 images, so one image is 0.28 points. " if args.data == "digits"
         else "One seed; one test image is 0.01 points. ")
        + "'Acc. before "
        "fine-tune' is the pruned model with the inherited weights, before any training.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run, RESULTS.md untouched")
    parser.add_argument("--variant", default="large")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--l1", type=float, default=tfprune.callbacks.BNSparsity().l1)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=DATA_SETS, default="digits", help="digits (default) or fashion-mnist")
    parser.add_argument("--train-size", type=int, default=None,
                        help="fashion-mnist: a stratified subset of the 60,000 training images (default all)")
    args = parser.parse_args(argv)
    if args.quick:
        args.variant, args.epochs, args.fine_tune_epochs = "small", 1, 1
    rows, sparse_accuracy, statistics, dense_accuracy = run(args)
    command = ".venv/bin/python -m benchmarks.structured_digits " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    text = _format(rows, sparse_accuracy, statistics, args, command.strip(), dense_accuracy)
    print(text)
    if not args.quick:
        write_section(section(args.data), text)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
