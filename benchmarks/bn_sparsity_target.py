"""BN-γ sparsity training to a target share, without a hand-tuned strength (issue 30, item 2).

For each network (a VGG-style BN CNN, a ResNet-style CNN, MobileNetV3-Small on
small inputs) and each optimizer (Adam 1e-3, SGD 0.05 with momentum 0.9) on the
offline digits:

1. plain training (no penalty): the reference accuracy;
2. `BNSparsity(target=TARGET, targets=...)` with no strength given, from
   scratch, the same number of epochs: accuracy, share of the targeted |γ|
   below 1e-2, and the strength the controller ended at;
3. `tfprune.prune(criterion="bn_gamma", rate=TARGET)` (global, `round_to=1`)
   and the accuracy of the pruned model before any fine-tuning.

The fixed default strength (`BNSparsity()`) runs too on the VGG-BN with Adam,
the case issue 30 reports (15% below 1e-2, 98.7% to 27.6% at rate 0.5).

Usage: `.venv/bin/python -m benchmarks.bn_sparsity_target [--quick] [--models vgg resnet small]
[--optimizers adam sgd]`. Writes one "## BN-γ sparsity training to a target (digits): <model>" section
of benchmarks/RESULTS.md per model (`$TFPRUNE_BENCH_RESULTS` if set).
"""

import argparse
import sys
import time
import warnings

import keras
import numpy as np

import tfprune
from benchmarks.bn_sparsity_digits import vgg_bn
from benchmarks.common import command_line, machine, write_section
from tfprune.callbacks.bn_sparsity import BNSparsity

SECTION = "## BN-γ sparsity training to a target (digits)"  # one per model: SECTION + ": " + NAMES[model]
FASHION_SECTION = "## BN-γ sparsity training to a target (Fashion-MNIST)"
TARGET = 0.5
# model -> (image size, targets of BNSparsity and prune, epochs)
SETTINGS = {
    "vgg": dict(image_size=16, targets="all", epochs=20),
    "resnet": dict(image_size=16, targets="all", epochs=20),
    "small": dict(image_size=32, targets="expansion", epochs=15),
}
NAMES = {
    "vgg": "VGG-BN (32/32/64/64)",
    "resnet": "ResNet-style (32/64, 4 residual blocks)",
    "small": "MobileNetV3-Small (32x32)",
}
OPTIMIZERS = {
    "adam": ("Adam 1e-3", lambda: keras.optimizers.Adam(1e-3)),
    "sgd": ("SGD 0.05, momentum 0.9", lambda: keras.optimizers.SGD(0.05, momentum=0.9)),
}


def resnet_bn(input_shape=(16, 16, 3), classes=10, seed=0):
    """A small ResNet-style CNN: a 32-filter stem, two residual blocks of 32, two of 64 (the first strided).

    Each block is conv-BN-ReLU-conv-BN added to its shortcut (a strided 1x1
    conv with BN where the width changes), then ReLU: the channels of a stage
    are tied across its additions, as in ResNet.

    Args:
        input_shape: Tuple of 3 ints. Defaults to `(16, 16, 3)`.
        classes: Int. Defaults to `10`.
        seed: Int. Seeds the initializers.

    Returns:
        A functional `keras.Model` with softmax outputs.

    Example:

    >>> resnet_bn().count_params() > 0
    True
    """
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    inputs = keras.Input(input_shape)
    hidden = layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem")(inputs)
    hidden = layers.ReLU()(layers.BatchNormalization(momentum=0.9, name="stem_bn")(hidden))
    for index, (filters, stride) in enumerate(((32, 1), (32, 1), (64, 2), (64, 1))):
        shortcut = hidden
        branch = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"block{index}_a")(hidden)
        branch = layers.ReLU()(layers.BatchNormalization(momentum=0.9, name=f"block{index}_a_bn")(branch))
        branch = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{index}_b")(branch)
        branch = layers.BatchNormalization(momentum=0.9, name=f"block{index}_b_bn")(branch)
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"block{index}_proj")(shortcut)
            shortcut = layers.BatchNormalization(momentum=0.9, name=f"block{index}_proj_bn")(shortcut)
        hidden = layers.ReLU()(layers.Add()([shortcut, branch]))
    hidden = layers.GlobalAveragePooling2D()(hidden)
    outputs = layers.Dense(classes, activation="softmax", name="logits")(hidden)
    return keras.Model(inputs, outputs, name="resnet_bn")


def _build(model_name, seed):
    if model_name == "vgg":
        return vgg_bn(seed=seed)
    if model_name == "resnet":
        return resnet_bn(seed=seed)
    return tfprune.models.mobilenet_v3("small", input_shape=(32, 32, 3), classes=10, seed=seed)


def _compile(model, optimizer_name):
    model.compile(OPTIMIZERS[optimizer_name][1](), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _accuracy(model, test):
    return float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])


def _pruned_accuracy(model, rate, targets, optimizer_name, test):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruned, result = tfprune.prune(model, "bn_gamma", rate=rate, targets=targets, round_to=1)
    return _accuracy(_compile(pruned, optimizer_name), test), result


def run_cell(model_name, optimizer_name, train, test, args, callback_factory, label):
    """Trains one network with one optimizer and a `BNSparsity` (or none), then prunes at `TARGET`.

    Args:
        model_name: `"vgg"`, `"resnet"` or `"small"`.
        optimizer_name: `"adam"` or `"sgd"`.
        train: Training `tf.data.Dataset`.
        test: Test `tf.data.Dataset`.
        args: Parsed arguments.
        callback_factory: Callable `targets -> BNSparsity` or None for plain training.
        label: String naming the training in the printed line.

    Returns:
        Dict of measurements.

    Example:

    >>> # run_cell("vgg", "adam", *tfprune.datasets.digits(image_size=16), args, None, "plain")
    """
    settings = SETTINGS[model_name]
    started = time.perf_counter()
    model = _compile(_build(model_name, args.seed), optimizer_name)
    callbacks = [] if callback_factory is None else [callback_factory(settings["targets"])]
    history = model.fit(train, epochs=args.epochs or settings["epochs"], verbose=0, callbacks=callbacks)
    out = dict(model=model_name, optimizer=optimizer_name, label=label, accuracy=_accuracy(model, test))
    probe = BNSparsity(targets=settings["targets"])  # reads the targeted γ without training
    probe.set_model(model)
    probe.on_train_begin()
    magnitudes = probe._all_magnitudes()
    out["share"] = float(np.mean(magnitudes < 1e-2))
    out["count"] = int(magnitudes.size)
    out["strengths"] = history.history.get("bn_gamma_l1", [])
    out["shares"] = history.history.get("bn_gamma_below_0.01", [])
    out["channel_share"] = (history.history.get("bn_channel_share") or [None])[-1]
    out["pruned"], result = _pruned_accuracy(model, TARGET, settings["targets"], optimizer_name, test)
    out["params_reduction"] = result.params_reduction
    out["seconds"] = time.perf_counter() - started
    print(f"{model_name} {optimizer_name} {label}: acc {out['accuracy']:.4f} share {out['share']:.3f} "
          f"pruned@{TARGET} {out['pruned']:.4f} strength {out['strengths'][-1:] or '-'} "
          f"({out['seconds']:.0f} s)\n    strengths {np.round(out['strengths'], 4).tolist()}\n    shares {np.round(out['shares'], 3).tolist()}\n    quantiles {np.round(history.history.get('bn_gamma_quantile', []), 4).tolist()}", flush=True)
    return out


def _percent(value):
    return f"{100 * value:.2f}"


def _data_sentence(args):
    if args.fashion_mnist:
        return (f"`tfprune.datasets.fashion_mnist` ({args.fashion_mnist} stratified training images of the 60,000 "
                "to keep the run short, the 10,000 test images; resized to the model's input size, 3 channels)")
    return "`tfprune.datasets.digits` (1437 train / 360 test; one image is 0.28 points)"


def _load(model_name, args):
    size = SETTINGS[model_name]["image_size"]
    if args.fashion_mnist:
        return tfprune.datasets.fashion_mnist(image_size=size, channels=3, batch_size=64,
                                              train_size=args.fashion_mnist, seed=args.seed)
    return tfprune.datasets.digits(image_size=size, batch_size=64, seed=args.seed)


def format_section(rows, args, command, seconds):
    """Returns the RESULTS.md section for the measured rows.

    Args:
        rows: List of dicts from `run_cell`.
        args: Parsed arguments.
        command: String. The command that produced them.
        seconds: Float. Wall time of the whole run.

    Returns:
        Markdown string starting with the section heading.

    Example:

    >>> # format_section([run_cell(...)], args, "...", 60.0)
    """
    lines = [
        f"{FASHION_SECTION if args.fashion_mnist else SECTION}: {NAMES[rows[0]['model']]}",
        "",
        f"Command: `{command}` ({machine()}, shared with other engineers' jobs; Keras {keras.__version__}; "
        f"{seconds / 60:.0f} min).",
        f"{_data_sentence(args)}, batch 64, seed {args.seed}, one run per cell. 'Target' is `BNSparsity(target={TARGET}, targets=...)` with every "
        "other argument at its default (no strength given: the controller starts at 0.02 and adapts it "
        "every step, penalising only the channels ranked in the bottom half, so that the norm at the 0.5 "
        "share falls linearly to 0.005 over two thirds of the epochs). "
        "'Fixed' is `BNSparsity(targets=...)` at its default strength 0.02. `targets` is `'all'` for "
        "VGG-BN and ResNet, `'expansion'` for MobileNetV3-Small, and is what `tfprune.prune` prunes. "
        f"'Pruned' is `tfprune.prune(model, 'bn_gamma', rate={TARGET}, targets=..., round_to=1)` before "
        "any fine-tuning; 'loss' is the sparsity-trained accuracy minus the pruned one. 'Strength' is "
        "the strength the controller ended at (the `bn_gamma_l1` log); 'channels' the share of the targeted "
        "channels whose BN γ and β have a norm below 1e-2 (the `bn_channel_share` log: what the target and "
        "the rate count; in a ResNet one channel of a stage holds the γ of several BatchNormalizations "
        "tied by the additions, so the share of γ is lower).",
        "",
        "| Network | Optimizer | Epochs | Training | Accuracy (%) | |γ| < 1e-2 | Channels | Pruned at 0.5 (%) "
        "| Loss (points) | Params removed | Strength |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    verdicts = []
    for row in rows:
        trained = row["label"] != "plain"
        loss = 100 * (row["accuracy"] - row["pruned"])
        strength = f"{row['strengths'][-1]:.3g}" if trained and row["strengths"] else "–"
        epochs = args.epochs or SETTINGS[row["model"]]["epochs"]
        channels = "–" if row["channel_share"] is None else f"{100 * row['channel_share']:.1f}%"
        lines.append(
            f"| {NAMES[row['model']]} | {OPTIMIZERS[row['optimizer']][0]} | {epochs} | {row['label']} | "
            f"{_percent(row['accuracy'])} | {100 * row['share']:.1f}% of {row['count']} | "
            f"{channels} | "
            f"{_percent(row['pruned'])} | "
            f"{loss:.2f} | {100 * row['params_reduction']:.1f}% | {strength} |"
        )
        if row["label"] == "target":
            met = row["channel_share"] >= 0.4 and loss <= 5.0
            verdicts.append(f"with {OPTIMIZERS[row['optimizer']][0]} it "
                            f"{'meets' if met else 'MISSES'} it ({channels} of the channels and "
                            f"{100 * row['share']:.1f}% of γ below 1e-2, {loss:.2f} points lost at 0.5)")
    lines += ["", "Issue 30's goal for the target form (at least 40% below 1e-2, at most 5 points lost at rate 0.5 "
              "before fine-tuning): " + "; ".join(verdicts) + ".", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes: VGG-BN, Adam, 2 epochs")
    parser.add_argument("--models", nargs="+", default=None, choices=tuple(SETTINGS))
    parser.add_argument("--optimizers", nargs="+", default=None, choices=tuple(OPTIMIZERS))
    parser.add_argument("--epochs", type=int, default=None, help="epochs for every model (default: per model)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain and fixed-strength references")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fashion-mnist", type=int, default=None, metavar="TRAIN_SIZE",
                        help="Fashion-MNIST with this many training images instead of the digits")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = args.epochs or 2
    models = args.models or (["vgg"] if args.quick else list(SETTINGS))
    optimizers = args.optimizers or (["adam"] if args.quick else list(OPTIMIZERS))
    for model_name in models:
        started = time.perf_counter()
        rows = []
        train, test = _load(model_name, args)
        for optimizer_name in optimizers:
            if not args.no_plain and not args.quick:
                rows.append(run_cell(model_name, optimizer_name, train, test, args, None, "plain"))
                if model_name == "vgg" and optimizer_name == "adam":
                    rows.append(run_cell(model_name, optimizer_name, train, test, args,
                                         lambda targets: BNSparsity(targets=targets), "fixed"))
            rows.append(run_cell(model_name, optimizer_name, train, test, args,
                                 lambda targets: BNSparsity(target=TARGET, targets=targets), "target"))
        text = format_section(rows, args, command_line("benchmarks.bn_sparsity_target", argv),
                              time.perf_counter() - started)
        print(text, flush=True)
        write_section(f"{FASHION_SECTION if args.fashion_mnist else SECTION}: {NAMES[model_name]}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
