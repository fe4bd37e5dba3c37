"""Data-driven pruning (HRank, DropNet, He et al.) of MobileNetV3 on digits, beside the other criteria.

One training of `tfprune.models.mobilenet_v3` with `BNSparsity` (the recipe of
benchmarks/structured_digits.py, so that bn_gamma and sparsity_gamma have
something to read), then every method prunes the expansion convs at `--rate`
and the pruned model gets the same fine-tuning (`--fine-tune-epochs`, Adam).
DropNet spreads the same rate and the same fine-tuning epochs over `--rounds`
rounds. ChannelPruning's accuracy before fine-tuning is its selling point.

Usage: `.venv/bin/python -m benchmarks.datadriven_digits [--quick]`. Writes the
"## Data-driven pruning (digits)" section of benchmarks/RESULTS.md (not with --quick).
"""

import argparse
import functools
import platform
import sys
import time

import keras
import numpy as np

import tfprune
from benchmarks.common import write_section

SECTION = "## Data-driven pruning (digits)"


def _compile(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _accuracy(model, test):
    x_test, y_test = test
    return float(model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"])


def _one_shot(criterion, scope):
    """A method that prunes once with `tfprune.prune`; returns (pruned, result, seconds)."""

    def method(model, train, args):
        start = time.perf_counter()
        pruned, result = tfprune.prune(
            model,
            criterion,
            rate=args.rate,
            scope=scope,
            targets="expansion",
            data=train[0],
            seed=args.seed,
            round_to=1,  # exact rates: criteria are compared at the same widths
        )
        return pruned, result, time.perf_counter() - start

    return method


def _channel_pruning(model, train, args):
    start = time.perf_counter()
    pruner = tfprune.pruners.ChannelPruning(
        rate=args.rate, targets="expansion", seed=args.seed, verbose=0
    )
    pruned, result = pruner.prune(model, train[0])
    return pruned, result, time.perf_counter() - start


def _methods(args):
    """`[(row name, scope, method)]`; DropNet is handled by `_dropnet`."""
    hrank = functools.partial(tfprune.criteria.hrank, verbose=0)
    hrank.__name__ = "hrank"
    return [
        ("hrank", "group", _one_shot(hrank, "group")),
        ("activation (DropNet criterion, one shot)", "global", _one_shot("activation", "global")),
        ("activation (DropNet criterion, one shot)", "group", _one_shot("activation", "group")),
        (
            "reconstruction (LASSO selection, no refit)",
            "group",
            _one_shot("reconstruction", "group"),
        ),
        ("ChannelPruning (LASSO + least-squares refit)", "group", _channel_pruning),
    ] + [
        (name, "global", _one_shot(name, "global"))
        for name in ("l1", "bn_gamma", "sparsity_gamma", "random")
    ]


def _dropnet(model, train, test, args):
    """DropNet rounds: prune 1 - (1 - rate)^(1/rounds) of the remaining channels, then fine-tune."""
    fraction = 1 - (1 - args.rate) ** (1 / args.rounds)
    pruner = tfprune.pruners.DropNet(rate=fraction, scope="global", targets="expansion")
    epochs = [
        args.fine_tune_epochs // args.rounds + (index < args.fine_tune_epochs % args.rounds)
        for index in range(args.rounds)
    ]
    start = time.perf_counter()
    current = model
    for round_epochs in epochs:
        current, result = pruner.step(current, train[0])
        _compile(current, args.learning_rate)
        current.fit(*train, epochs=round_epochs, batch_size=64, verbose=0)
    seconds = time.perf_counter() - start
    first = pruner.results[0]
    summary = tfprune.PruneResult(
        criterion="activation",
        rate=args.rate,
        scope="global",
        threshold=None,
        groups=result.groups,
        skipped=result.skipped,
        params_before=first.params_before,
        params_after=result.params_after,
        macs_before=first.macs_before,
        macs_after=result.macs_after,
    )
    return dict(
        name=f"DropNet ({args.rounds} rounds of {100 * fraction:.1f}%, fine-tune between)",
        scope="global",
        result=summary,
        before_fine_tune=None,
        accuracy=_accuracy(current, test),
        prune_seconds=None,
        seconds=seconds,
    )


def run(args):
    """Trains once, prunes with every method, fine-tunes; returns rows and the base accuracy."""
    (x_train, y_train), (x_test, y_test) = tfprune.datasets.digits(
        image_size=32, as_numpy=True, seed=args.seed
    )
    x_train, y_train = x_train[: args.train_limit], y_train[: args.train_limit]
    train, test = (x_train, y_train), (x_test, y_test)
    model = tfprune.models.mobilenet_v3(
        args.variant, input_shape=(32, 32, 3), classes=10, seed=args.seed
    )
    _compile(model, args.learning_rate)
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=64,
        verbose=0,
        callbacks=[tfprune.callbacks.BNSparsity(args.l1)],
    )
    base_accuracy = _accuracy(model, test)
    print(f"trained: test accuracy {base_accuracy:.4f}", flush=True)
    rows = []
    methods = _methods(args)
    if args.quick:
        # The smoke run exercises each code path once: a data criterion, the pruner and the generic one-shot path.
        methods = [methods[index] for index in (0, 4, -1)]
    for name, scope, method in methods:
        keras.utils.set_random_seed(args.seed)
        pruned, result, prune_seconds = method(model, train, args)
        before = _accuracy(_compile(pruned, args.learning_rate), test)
        start = time.perf_counter()
        pruned.fit(x_train, y_train, epochs=args.fine_tune_epochs, batch_size=64, verbose=0)
        rows.append(
            dict(
                name=name,
                scope=scope,
                result=result,
                before_fine_tune=before,
                accuracy=_accuracy(pruned, test),
                prune_seconds=prune_seconds,
                seconds=time.perf_counter() - start,
            )
        )
        print(
            name,
            f"{before:.4f}",
            f"{rows[-1]['accuracy']:.4f}",
            f"{prune_seconds:.1f}s",
            flush=True,
        )
    keras.utils.set_random_seed(args.seed)
    rows.append(_dropnet(model, train, test, args))
    print(rows[-1]["name"], f"{rows[-1]['accuracy']:.4f}", flush=True)
    return rows, base_accuracy


def _format(rows, base_accuracy, args, command):
    lines = [
        SECTION,
        "",
        f"Command: `{command}` (x86_64, Python {platform.python_version()}, 2 cores shared with other "
        f"jobs; Keras {keras.__version__}).",
        f"`tfprune.models.mobilenet_v3({args.variant!r}, input_shape=(32, 32, 3), classes=10, seed={args.seed})` "
        "on `tfprune.datasets.digits(image_size=32, as_numpy=True)` (1437 train / 360 test), trained "
        f"{args.epochs} epochs (Adam {args.learning_rate}, batch 64, `BNSparsity({args.l1})`): test accuracy "
        f"**{100 * base_accuracy:.2f}%**. Every method prunes the expansion convs (`targets='expansion'`, SE "
        f"bottlenecks keep MobileNetV3's ratio) at rate {args.rate} and then gets {args.fine_tune_epochs} "
        "fine-tuning epochs (Adam, batch 64); the data-driven methods score on the training images "
        "(hrank and reconstruction: 5 batches of 128; activation: all). DropNet prunes and fine-tunes in "
        f"{args.rounds} rounds with the same total epochs. Scope: `group` = every expansion group loses the "
        "rate (the HRank and He et al. papers prune per layer), `global` = one threshold.",
        "",
        "| Method | Scope | Params | MACs | Groups at the guard | Acc. before fine-tune (%) | Acc. after fine-tune (%) | vs unpruned (points) | Pruning time (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    first = rows[0]["result"]
    lines.append(
        f"| unpruned | – | {first.params_before:,} | {first.macs_before / 1e6:.2f} M | – | – | "
        f"{100 * base_accuracy:.2f} | – | – |"
    )
    for row in rows:
        result = row["result"]
        before = "–" if row["before_fine_tune"] is None else f"{100 * row['before_fine_tune']:.2f}"
        seconds = "–" if row["prune_seconds"] is None else f"{row['prune_seconds']:.1f}"
        lines.append(
            f"| {row['name']} | {row['scope']} | {result.params_after:,} (-{100 * result.params_reduction:.1f}%) | "
            f"{result.macs_after / 1e6:.2f} M (-{100 * result.macs_reduction:.1f}%) | "
            f"{sum(group.guarded for group in result.groups)} | {before} | "
            f"{100 * row['accuracy']:.2f} | {100 * (row['accuracy'] - base_accuracy):+.2f} | {seconds} |"
        )
    lines += [
        "",
        "One seed; the test split has 360 images, so one image is 0.28 points. 'Groups at the guard': "
        "expansion groups the criterion would have emptied, kept at 1 channel by `min_channels` (global "
        "scope compares raw scores across layers: mean activations and ranks differ by layer). Pruning "
        "time includes scoring on the data (ChannelPruning: selection, surgery and refit group by group).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run, RESULTS.md untouched")
    parser.add_argument("--variant", default="small")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--l1", type=float, default=1e-4)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train-limit", type=int, default=None, help="use the first N training images"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.fine_tune_epochs, args.rounds, args.train_limit = 1, 1, 1, 128
    rows, base_accuracy = run(args)
    command = ".venv/bin/python -m benchmarks.datadriven_digits " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    text = _format(rows, base_accuracy, args, command.strip())
    print(text)
    if not args.quick:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
