"""A small vision transformer on the offline digits: heads and MLP units pruned at 30% and 50%.

Usage: `.venv/bin/python -m benchmarks.vit_digits [--quick] [--seeds 0 1 2]`.
Writes the `## Attention pruning: digits ViT` section of the results file.

Each 8x8 digit becomes 16 tokens: its 2x2 patches (4 pixels) with a one-hot
position (16) appended. The model is a pre-LayerNorm transformer: a Dense
embedding to width 32, two blocks of `MultiHeadAttention` (4 heads, key
width 8) and an MLP (64 GELU units), each with a residual sum, then
LayerNorm, average pooling over the tokens and a Dense classifier. It is
trained with Adam, pruned by `tfprune.prune(criterion=c, rate=r,
round_to=1)` with `c` the weight magnitude (`"l1"`) or the first-order
Taylor estimate of the loss change (`"taylor"`) and `r` 30% or 50% (every
prunable group: the heads of both attention layers and both MLPs), and with
`targets="hidden"` at 25% (the residual width), fine-tuned, and measured:
test accuracy (median over the seeds), MACs (`tfprune.analyze`, attention
included), and LiteRT latency of the dense and pruned models of the first
seed (`tfprune.export.compare_latency`, XNNPACK, 1 thread, interleaved).
The same section times keras-hub's `ViTBackbone`, built from its
constructor, dense, with half of its heads and MLP units removed, and with
half of its hidden width removed.
"""

import argparse
import os
import statistics
import tempfile

import keras
import numpy as np
from keras import layers

import tfprune
from benchmarks.common import command_line, machine, write_section

SECTION = "## Attention pruning: digits ViT"
RATES = (0.3, 0.5)


def tokens(images):
    """(N, 8, 8) images in [0, 1] -> (N, 16, 20): 2x2 patches and one-hot positions."""
    patches = images.reshape(-1, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 16, 4)
    positions = np.broadcast_to(np.eye(16, dtype="float32"), (len(images), 16, 16))
    return np.concatenate([patches, positions], axis=-1).astype("float32")


def data(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = tokens(digits.images / 16.0)
    return train_test_split(x, digits.target, test_size=0.2, random_state=seed, stratify=digits.target)


def vit(seed, width=32, heads=4, mlp=64, blocks=2):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 20), name="tokens")
    x = layers.Dense(width, name="embed")(inputs)
    for block in range(blocks):
        normed = layers.LayerNormalization(name=f"block{block}_ln1")(x)
        attended = layers.MultiHeadAttention(heads, width // heads, name=f"block{block}_mha")(normed, normed)
        x = layers.Add(name=f"block{block}_add1")([x, attended])
        normed = layers.LayerNormalization(name=f"block{block}_ln2")(x)
        hidden = layers.Dense(mlp, activation="gelu", name=f"block{block}_mlp_in")(normed)
        x = layers.Add(name=f"block{block}_add2")([x, layers.Dense(width, name=f"block{block}_mlp_out")(hidden)])
    x = layers.GlobalAveragePooling1D(name="pool")(layers.LayerNormalization(name="ln")(x))
    return keras.Model(inputs, layers.Dense(10, name="logits")(x), name="digits_vit")


def fit(model, train, epochs, learning_rate):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])  # fmt: skip
    model.fit(*train, epochs=epochs, batch_size=64, verbose=0)
    return model


def accuracy(model, test):
    return float(model.evaluate(*test, verbose=0, return_dict=True)["accuracy"])


# (label, criterion, targets, rate): heads and MLP units by two criteria, and the hidden width.
VARIANTS = (
    ("l1 30%", "l1", "all", 0.3),
    ("l1 50%", "l1", "all", 0.5),
    ("taylor 30%", "taylor", "all", 0.3),
    ("taylor 50%", "taylor", "all", 0.5),
    ("l1 hidden 25%", "l1", "hidden", 0.25),
)


def run(args):
    epochs, finetune = (2, 1) if args.quick else (args.epochs, args.finetune_epochs)
    seeds = args.seeds[:1] if args.quick else args.seeds
    rows = {"dense": []} | {variant[0]: [] for variant in VARIANTS}
    models = {}
    for seed in seeds:
        x_train, x_test, y_train, y_test = data(seed)
        train, test = (x_train, y_train), (x_test, y_test)
        dense = fit(vit(seed), train, epochs, 1e-3)
        rows["dense"].append(accuracy(dense, test))
        models.setdefault("dense", dense)
        for label, criterion, targets, rate in VARIANTS:
            # taylor reads the compiled loss and the training labels; l1 ignores `data`.
            small, result = tfprune.prune(dense, criterion, rate=rate, targets=targets, round_to=1,
                                          data=train, verbose=0)  # fmt: skip
            rows[label].append(accuracy(fit(small, train, finetune, 5e-4), test))
            models.setdefault(label, small)
    dense_macs = tfprune.analyze(models["dense"]).macs
    with tempfile.TemporaryDirectory() as directory:
        paths = {}
        for label, model in models.items():
            paths[label] = os.path.join(directory, f"{label.replace(' ', '_').replace('%', '')}.tflite")
            tfprune.export.to_tflite(model, paths[label], verbose=0)
        latency = tfprune.export.compare_latency(paths, threads=1, runs=20 if args.quick else 200)
    dense_accuracy = statistics.median(rows["dense"])
    lines = [
        SECTION, "",
        f"Command: `{command_line('benchmarks.vit_digits')}` ({machine()}); seeds {list(seeds)}, "
        f"{epochs} training epochs, {finetune} fine-tuning epochs after pruning. `taylor` scores "
        "with the training split and the compiled loss.",
        "",
        "| model | heads per layer | MLP units | hidden width | test accuracy (median) | per seed | MACs "
        "| MACs ratio | LiteRT ms (1 thread) | latency ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    verdicts = []
    for label, model in models.items():
        macs = tfprune.analyze(model).macs
        median = statistics.median(rows[label])
        lines.append(
            f"| {'pruned ' + label if label != 'dense' else label} | {model.get_layer('block0_mha').num_heads} "
            f"| {model.get_layer('block0_mlp_in').units} | {model.get_layer('embed').units} | {median:.4f} "
            f"| {', '.join(f'{a:.4f}' for a in rows[label])} | {macs} | {dense_macs / macs:.2f} "
            f"| {latency[label]:.4f} | {latency['dense'] / latency[label]:.2f} |"
        )
        if label != "dense":
            gap = (dense_accuracy - median) * 100
            verdicts.append(f"{label}: {gap:+.1f} points below the dense model"
                            + (" (within 2 points)" if gap <= 2 else " (behind by more than 2 points)"))  # fmt: skip
    lines += ["", "Median over the seeds: " + "; ".join(verdicts) + ". " + criteria_verdict(rows) + " The latency ratio is the measured "
              "speed-up of the pruned file; the MACs ratio is the ideal one (attention's softmax, "
              "LayerNorm and the token reshapes do not shrink with the heads). `hidden` prunes the "
              "residual width (`targets=\"hidden\"`): every LayerNormalization then normalises over "
              "fewer channels, so that model relies on its fine-tuning more than the others. The pruned "
              "models train for their fine-tuning epochs more than the dense one."]  # fmt: skip
    lines += ["", *keras_hub_vit_rows(args.quick)]
    if args.quick:
        lines += ["", "Quick mode: one seed, 2+1 epochs; the numbers only show that the pipeline runs."]
    write_section(SECTION, "\n".join(lines) + "\n")
    print("\n".join(lines))


def criteria_verdict(rows):
    """One sentence comparing taylor with l1 at each rate (medians over the seeds), saying where taylor is behind."""
    parts = []
    for rate in ("30%", "50%"):
        gap = (statistics.median(rows[f"taylor {rate}"]) - statistics.median(rows[f"l1 {rate}"])) * 100
        parts.append(f"{gap:+.1f} points at {rate}" + (" (behind l1)" if gap < 0 else ""))
    return "taylor against l1: " + ", ".join(parts) + "."


def keras_hub_vit_rows(quick):
    """keras-hub's ViTBackbone, built from its constructor: dense, half its heads and MLP units, half its hidden width.

    Latency depends only on the widths, so the random weights of the
    constructor serve; the pruned models are not fine-tuned.
    """
    import warnings

    import keras_hub

    keras.utils.set_random_seed(0)
    size, depth, hidden = (32, 2, 32) if quick else (64, 4, 64)
    model = keras_hub.models.ViTBackbone(image_shape=(size, size, 3), patch_size=8, num_layers=depth,
                                         num_heads=4, hidden_dim=hidden, mlp_dim=2 * hidden)  # fmt: skip
    models = {"dense": model}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConfigRepairWarning for the patch embedding, as documented
        models["heads and MLP 50%"], _ = tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)
        # A backbone's output is its hidden states: the hidden width shrinks inside a task model.
        classifier = keras_hub.models.ViTImageClassifier(model, num_classes=10)
        models["classifier"] = classifier
        models["classifier, hidden 50%"], _ = tfprune.prune(classifier, "l1", rate=0.5, targets="hidden",
                                                            round_to=1, verbose=0)  # fmt: skip
    sample = np.random.default_rng(0).uniform(size=(4, size, size, 3)).astype("float32")
    with tempfile.TemporaryDirectory() as directory:
        paths = {name: os.path.join(directory, f"{index}.tflite") for index, name in enumerate(models)}
        errors = {name: tfprune.export.to_tflite(m, paths[name], sample_inputs=sample, verbose=0).max_abs_error
                  for name, m in models.items()}  # fmt: skip
        latency = tfprune.export.compare_latency(paths, threads=1, runs=20 if quick else 200)
    macs = {name: tfprune.analyze(m).macs for name, m in models.items()}
    lines = [
        f"keras-hub `ViTBackbone` from its constructor ({size}x{size} images, patch 8, {depth} layers, "
        f"4 heads, hidden {hidden}, MLP {2 * hidden}; random weights, not fine-tuned), pruned by "
        "`tfprune.prune(criterion=\"l1\", rate=0.5, round_to=1)`: the heads and MLP units of every block, "
        "and, in a `ViTImageClassifier` on that backbone (10 classes), with `targets=\"hidden\"` the hidden "
        "width (patch embedding, class token, position embedding, every LayerNormalization and projection); "
        "ratios against the dense backbone, the classifier's against the dense classifier.",
        "",
        "| model | MACs | MACs ratio | LiteRT ms (1 thread) | latency ratio | LiteRT max abs error |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in models:
        base = "classifier" if name.startswith("classifier") else "dense"
        label = name if name in ("dense", "classifier") else f"pruned {name}"
        lines.append(
            f"| {label} | {macs[name]} | {macs[base] / macs[name]:.2f} "
            f"| {latency[name]:.4f} | {latency[base] / latency[name]:.2f} | {errors[name]:.1e} |"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, a few epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
