"""BN-γ sparsity training on the offline digits: is channel pruning free before fine-tuning? (issue 15)

For a VGG-style CNN with BatchNormalization (16x16 digits), MobileNetV3-Small
and MobileNetV3-Large (32x32 digits):

1. plain training (Adam, no penalty): the reference accuracy and the γ
   histogram "before";
2. sparsity training with `BNSparsity` at its defaults (proximal channel
   penalty in the optimizer's metric), from scratch and from the plain model
   (a dense-trained start): accuracy, γ histogram "after", share of |γ| < 1e-2;
3. `tfprune.prune` at rates 0.3/0.5/0.7 with `bn_gamma`, `sparsity_gamma`,
   `l1` and `random`: accuracy before and after fine-tuning, and how many
   groups the guard kept from losing every channel (the MobileNetV3 source's
   collapse at rate 0.7);
4. the Rethinking row: the `sparsity_gamma` widths trained from fresh weights.

Usage: `.venv/bin/python -m benchmarks.bn_sparsity_digits [--quick] [--models vgg small large]`.
Writes one "## BN-γ sparsity training (digits): <model>" section of
benchmarks/RESULTS.md per model as soon as it is measured (`$TFPRUNE_BENCH_RESULTS`
if set), so models can run in parallel processes (`--models large`).
"""

import argparse
import sys
import time
import warnings

import keras
import numpy as np

import tfprune
from benchmarks.common import command_line, machine, write_section
from benchmarks.structured_digits import _accuracy, _compile
from tfprune.callbacks.bn_sparsity import BNSparsity

SECTION = "## BN-γ sparsity training (digits)"  # one section per model: SECTION + ": " + NAMES[model]
RATES = (0.3, 0.5, 0.7)
# criterion -> scope, as in benchmarks/structured_digits.py: filter L1 norms grow
# with fan-in, so Li et al. rank them inside each layer.
CRITERIA = {"bn_gamma": "global", "sparsity_gamma": "global", "l1": "group", "random": "global"}
# model -> (image size, targets, epochs, dense-start sparsity epochs, fine-tune epochs)
DEFAULT_L1 = BNSparsity().l1
# VGG-BN's narrow layers have larger per-channel gradients: the default strength
# zeroes too few of its channels (measured: 0.05 left 30% below 1e-2 after 20 epochs).
# (fine-tuning and Rethinking at rate 0.5 only for the MobileNetV3s keep a model near 30 minutes
# on 2 shared cores)
SETTINGS = {
    "vgg": dict(image_size=16, targets="all", l1=0.1, epochs=30, dense_start_epochs=15, fine_tune_epochs=2,
                fine_tune_rates=RATES, dense_fine_tune_rates=RATES, rethinking_rates=RATES),
    "small": dict(image_size=32, targets="expansion", l1=DEFAULT_L1, epochs=15, dense_start_epochs=4, fine_tune_epochs=1,
                  fine_tune_rates=(0.5,), dense_fine_tune_rates=(0.5,), rethinking_rates=(0.5,)),
    "large": dict(image_size=32, targets="expansion", l1=DEFAULT_L1, epochs=10, dense_start_epochs=4, fine_tune_epochs=1,
                  fine_tune_rates=(0.5,), dense_fine_tune_rates=(0.5,), rethinking_rates=(0.5,)),
}
NAMES = {"vgg": "VGG-BN (32/32/64/64)", "small": "MobileNetV3-Small", "large": "MobileNetV3-Large"}
HISTOGRAM_EDGES = (1e-3, 1e-2, 1e-1, 0.5, 1.0)


def vgg_bn(input_shape=(16, 16, 3), classes=10, seed=0):
    """A VGG-style CNN with BatchNormalization: four 3x3 conv blocks of 32/32/64/64 filters.

    Args:
        input_shape: Tuple of 3 ints. Defaults to `(16, 16, 3)`.
        classes: Int. Defaults to `10`.
        seed: Int. Seeds the initializers.

    Returns:
        A functional `keras.Model` with softmax outputs.

    Example:

    >>> vgg_bn().count_params() > 0
    True
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    hidden = inputs
    for index, filters in enumerate((32, 32, 64, 64)):
        hidden = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{index}")(hidden)
        hidden = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{index}")(hidden)
        hidden = keras.layers.ReLU(name=f"relu{index}")(hidden)
        if index % 2 == 1:
            hidden = keras.layers.MaxPooling2D(name=f"pool{index}")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="logits")(hidden), name="vgg_bn")


def _build(model_name, seed):
    if model_name == "vgg":
        return vgg_bn(seed=seed)
    return tfprune.models.mobilenet_v3(model_name, input_shape=(32, 32, 3), classes=10, seed=seed)


def _copy(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def gamma_histogram(magnitudes):
    """Counts of |γ| in text bins: exactly 0, then up to 1e-3, 1e-2, 0.1, 0.5, 1 and above.

    Args:
        magnitudes: 1-D array of |γ|.

    Returns:
        String such as `"0: 12 · <1e-3: 0 · <0.01: 1 · <0.1: 3 · <0.5: 4 · <1: 10 · ≥1: 2"`.

    Example:

    >>> gamma_histogram(np.array([0.0, 0.005, 0.7, 1.5]))
    '0: 1 · <0.001: 0 · <0.01: 1 · <0.1: 0 · <0.5: 0 · <1: 1 · ≥1: 1'
    """
    magnitudes = np.asarray(magnitudes)
    parts = [f"0: {int(np.sum(magnitudes == 0))}"]
    lower = 0.0
    for edge in HISTOGRAM_EDGES:
        count = int(np.sum((magnitudes > 0) & (magnitudes >= lower) & (magnitudes < edge)))
        parts.append(f"<{edge:g}: {count}")
        lower = edge
    parts.append(f"≥{HISTOGRAM_EDGES[-1]:g}: {int(np.sum(magnitudes >= HISTOGRAM_EDGES[-1]))}")
    return " · ".join(parts)


def _targeted_magnitudes(model, targets):
    """|γ| of the BatchNormalizations `BNSparsity(targets=...)` penalises, without training."""
    callback = BNSparsity(targets=targets)
    callback.set_model(model)
    callback.on_train_begin()
    return callback._all_magnitudes()


def _prune_rows(model, start, train, test, settings, args, fine_tune_rates):
    rows = []
    for criterion, scope in CRITERIA.items():
        for rate in RATES:
            keras.utils.set_random_seed(args.seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the guard's warning is counted below instead
                pruned, result = tfprune.prune(
                    model, criterion, rate=rate, scope=scope, targets=settings["targets"], seed=args.seed,
                    round_to=1,  # exact rates: criteria are compared at the same widths
                )
            before = _accuracy(_compile(pruned, args.learning_rate), test)
            after = None
            if rate in fine_tune_rates:
                pruned.fit(train, epochs=settings["fine_tune_epochs"], verbose=0)
                after = _accuracy(pruned, test)
            rows.append(dict(start=start, criterion=f"{criterion} ({scope})", rate=rate, before=before,
                             after=after, result=result, guarded=[g.name for g in result.groups if g.guarded]))
            print(f"  {start} {criterion} {rate}: before {before:.4f} after {after}", flush=True)
    return rows


def run_model(model_name, train, test, args):
    """Runs plain training, sparsity training (two starts), pruning and Rethinking for one model.

    Args:
        model_name: `"vgg"`, `"small"` or `"large"`.
        train: Training `tf.data.Dataset`.
        test: Test `tf.data.Dataset`.
        args: Parsed arguments.

    Returns:
        Dict of measurements (accuracies, histograms, rows, seconds).

    Example:

    >>> # run_model("vgg", *tfprune.datasets.digits(image_size=16), args)
    """
    settings = dict(SETTINGS[model_name])
    if args.l1 is not None:
        settings["l1"] = args.l1
    if args.quick:
        settings.update(epochs=1, dense_start_epochs=1, fine_tune_epochs=1, fine_tune_rates=(0.5,),
                        dense_fine_tune_rates=(), rethinking_rates=(0.5,))
    started = time.perf_counter()
    epochs = settings["epochs"]
    targets = settings["targets"]
    out = dict(model=model_name, settings=settings)

    plain = _compile(_build(model_name, args.seed), args.learning_rate)
    plain.fit(train, epochs=epochs, verbose=0)
    out["plain_accuracy"] = _accuracy(plain, test)
    plain_magnitudes = _targeted_magnitudes(plain, targets)
    out["plain_histogram"] = gamma_histogram(plain_magnitudes)
    out["plain_share"] = float(np.mean(plain_magnitudes < 1e-2))
    print(f"{model_name} plain: {out['plain_accuracy']:.4f} {out['plain_histogram']}", flush=True)
    out["plain_rows"] = []
    for rate in RATES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruned, _ = tfprune.prune(plain, "bn_gamma", rate=rate, targets=targets, round_to=1)
        out["plain_rows"].append(_accuracy(_compile(pruned, args.learning_rate), test))

    starts = {}
    scratch = _compile(_build(model_name, args.seed), args.learning_rate)
    scratch.fit(train, epochs=epochs, verbose=0, callbacks=[BNSparsity(settings["l1"], targets=targets)])
    starts["scratch"] = (scratch, epochs)
    dense_start = _compile(_copy(plain), args.learning_rate)
    dense_start.fit(train, epochs=settings["dense_start_epochs"], verbose=0,
                    callbacks=[BNSparsity(settings["l1"], targets=targets)])
    starts["dense"] = (dense_start, settings["dense_start_epochs"])

    out["starts"] = {}
    out["rows"] = []
    for start, (model, start_epochs) in starts.items():
        magnitudes = _targeted_magnitudes(model, targets)
        accuracy = _accuracy(model, test)
        out["starts"][start] = dict(
            accuracy=accuracy, epochs=start_epochs, histogram=gamma_histogram(magnitudes),
            share=float(np.mean(magnitudes < 1e-2)), count=int(magnitudes.size),
        )
        print(f"{model_name} sparse ({start}): {accuracy:.4f} {out['starts'][start]}", flush=True)
        fine_tune_rates = settings["fine_tune_rates" if start == "scratch" else "dense_fine_tune_rates"]
        out["rows"] += _prune_rows(model, start, train, test, settings, args, fine_tune_rates)

    out["rethinking"] = []
    for rate in settings["rethinking_rates"]:
        keras.utils.set_random_seed(args.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh, _ = tfprune.prune(scratch, "sparsity_gamma", rate=rate, targets=targets, reinitialize=True,
                                     round_to=1)
        _compile(fresh, args.learning_rate).fit(train, epochs=epochs + settings["fine_tune_epochs"], verbose=0)
        out["rethinking"].append((rate, _accuracy(fresh, test)))
    out["seconds"] = time.perf_counter() - started
    return out


def _cell(value):
    return "–" if value is None else f"{100 * value:.2f}"


def format_section(out, args, command, seconds):
    """Returns the RESULTS.md section for the measurements of one `run_model`.

    Args:
        out: Dict from `run_model`.
        args: Parsed arguments.
        command: String. The command that produced them.
        seconds: Float. Wall time of the whole run.

    Returns:
        Markdown string starting with the section heading.

    Example:

    >>> # format_section(run_model("vgg", train, test, args), args, "...", 60.0)
    """
    settings = out["settings"]
    name = NAMES[out["model"]]
    lines = [
        f"{SECTION}: {name}",
        "",
        f"Command: `{command}` ({machine()}, shared with another engineer's jobs; Keras {keras.__version__}; "
        f"{seconds / 60:.0f} min for this model).",
        "`tfprune.datasets.digits` (1437 train / 360 test; one image is 0.28 points), Adam "
        f"{args.learning_rate}, batch 64, seed {args.seed}. Sparsity training is `BNSparsity({settings['l1']:g}, "
        f"targets={settings['targets']!r})` (default strength: {DEFAULT_L1:g}) with the other arguments at "
        "their defaults (proximal step of the channel penalty "
        "on every BN γ and β of a channel, in Adam's metric); `targets` is what `tfprune.prune` prunes. "
        "'Plain' is the same training without the "
        "callback; the dense-trained start continues the plain model with the callback. "
        "Shares and histograms are over the targeted γ (for MobileNetV3 the expansion and depthwise BN). "
        "'Before' is the pruned model with the inherited weights, 'after' after fine-tuning "
        "(Adam, epochs in the model's line; '–' where that rate was not fine-tuned, to keep the run "
        "short). 'Guarded' counts groups the guard (`min_channels=1`) kept from "
        "losing every channel: the collapse of the MobileNetV3 source at rate 0.7.",
        "",
    ]
    lines += [
        f"Plain: {settings['epochs']} epochs, test accuracy **{100 * out['plain_accuracy']:.2f}%**, "
        f"share of |γ| < 1e-2 {100 * out['plain_share']:.1f}%; γ histogram: {out['plain_histogram']}. "
        f"Pruned with `bn_gamma` before fine-tuning: "
        + ", ".join(f"{rate}: {100 * value:.2f}%" for rate, value in zip(RATES, out["plain_rows"]))
        + ".",
        "",
    ]
    for start, info in out["starts"].items():
        label = "from scratch" if start == "scratch" else "from the plain model"
        delta = 100 * (info["accuracy"] - out["plain_accuracy"])
        lines.append(
            f"- Sparsity-trained {label} ({info['epochs']} epochs): test accuracy "
            f"**{100 * info['accuracy']:.2f}%** ({delta:+.2f} vs plain), share of |γ| < 1e-2 "
            f"**{100 * info['share']:.1f}%** of {info['count']}; γ histogram: {info['histogram']}."
        )
    lines += [
        f"- Fine-tuning: {settings['fine_tune_epochs']} epoch(s).",
        "",
        "| Start | Criterion | Rate | Params | MACs | Acc. before fine-tune (%) | Acc. after (%) | Guarded |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in out["rows"]:
        result = row["result"]
        lines.append(
            f"| {row['start']} | {row['criterion']} | {row['rate']} | "
            f"{result.params_after:,} (-{100 * result.params_reduction:.1f}%) | "
            f"{result.macs_after / 1e6:.2f} M (-{100 * result.macs_reduction:.1f}%) | "
            f"{_cell(row['before'])} | {_cell(row['after'])} | {len(row['guarded'])} |"
        )
    for rate, accuracy in out["rethinking"]:
        lines.append(
            f"| Rethinking | sparsity_gamma widths, fresh weights, "
            f"{settings['epochs'] + settings['fine_tune_epochs']} epochs | {rate} | | | – | {_cell(accuracy)} | |"
        )
    lines += ["", _verdict(out), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _verdict(out):
    """One sentence per start: issue 15's 'Done when' checks, measured."""
    sentences = []
    for start, info in out["starts"].items():
        rows = [row for row in out["rows"] if row["start"] == start]
        random = {row["rate"]: row["before"] for row in rows if row["criterion"].startswith("random")}
        checks = []
        for criterion in ("bn_gamma", "sparsity_gamma"):
            mine = {row["rate"]: row["before"] for row in rows if row["criterion"].startswith(criterion)}
            loss = 100 * (info["accuracy"] - mine[0.5])
            above = all(mine[rate] > random[rate] for rate in RATES)
            checks.append(f"`{criterion}` loses {loss:.2f} points at 0.5 before fine-tuning and is "
                          f"{'above' if above else 'NOT above'} `random` at every rate")
        guarded = sum(len(row["guarded"]) for row in rows if row["rate"] == 0.7)
        sentences.append(f"{start.capitalize()} start: " + "; ".join(checks)
                         + f"; at rate 0.7 the guard kept {guarded} group(s) (over all criteria) from being emptied.")
    return " ".join(sentences)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes: VGG-BN, 1 epoch")
    parser.add_argument("--models", nargs="+", default=None, choices=tuple(SETTINGS))
    parser.add_argument("--l1", type=float, default=None, help="strength for every model (default: per model)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    models = args.models or (["vgg"] if args.quick else list(SETTINGS))
    for model_name in models:
        started = time.perf_counter()
        train, test = tfprune.datasets.digits(
            image_size=SETTINGS[model_name]["image_size"], batch_size=64, seed=args.seed
        )
        out = run_model(model_name, train, test, args)
        text = format_section(out, args, command_line("benchmarks.bn_sparsity_digits", argv),
                              time.perf_counter() - started)
        print(text, flush=True)
        write_section(f"{SECTION}: {NAMES[model_name]}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
