"""A small vision transformer on the offline digits: heads and MLP units pruned at 30% and 50%.

Usage: `.venv/bin/python -m benchmarks.vit_digits [--quick] [--seeds 0 1 2]`.
Writes the `## Attention pruning: digits ViT` section of the results file.

Each 8x8 digit becomes 16 tokens: its 2x2 patches (4 pixels) with a one-hot
position (16) appended. The model is a pre-LayerNorm transformer: a Dense
embedding to width 32, two blocks of `MultiHeadAttention` (4 heads, key
width 8) and an MLP (64 GELU units), each with a residual sum, then
LayerNorm, average pooling over the tokens and a Dense classifier. It is
trained with Adam, pruned by `tfprune.prune(criterion="l1", rate=r,
round_to=1)` (every prunable group: the heads of both attention layers and
both MLPs; the residual width stays), fine-tuned, and measured: test
accuracy (median over the seeds), MACs (`tfprune.analyze`, attention
included), and LiteRT latency of the dense and pruned models of the first
seed (`tfprune.export.compare_latency`, XNNPACK, 1 thread, interleaved).
The same section times keras-hub's `ViTBackbone`, built from its
constructor, dense and with half of its heads and MLP units removed.
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


def run(args):
    epochs, finetune = (2, 1) if args.quick else (args.epochs, args.finetune_epochs)
    seeds = args.seeds[:1] if args.quick else args.seeds
    rows = {"dense": []} | {rate: [] for rate in RATES}
    models = {}
    for seed in seeds:
        x_train, x_test, y_train, y_test = data(seed)
        train, test = (x_train, y_train), (x_test, y_test)
        dense = fit(vit(seed), train, epochs, 1e-3)
        rows["dense"].append(accuracy(dense, test))
        models.setdefault("dense", dense)
        for rate in RATES:
            small, result = tfprune.prune(dense, "l1", rate=rate, round_to=1, verbose=0)
            rows[rate].append(accuracy(fit(small, train, finetune, 5e-4), test))
            models.setdefault(rate, (small, result))
    dense_macs = tfprune.analyze(models["dense"]).macs
    latency = {}
    with tempfile.TemporaryDirectory() as directory:
        paths = {"dense": os.path.join(directory, "dense.tflite")}
        tfprune.export.to_tflite(models["dense"], paths["dense"], verbose=0)
        for rate in RATES:
            paths[rate] = os.path.join(directory, f"pruned_{rate}.tflite")
            tfprune.export.to_tflite(models[rate][0], paths[rate], verbose=0)
        latency = tfprune.export.compare_latency(
            {str(name): path for name, path in paths.items()}, threads=1, runs=20 if args.quick else 200)
    dense_accuracy = statistics.median(rows["dense"])
    lines = [
        SECTION, "",
        f"Command: `{command_line('benchmarks.vit_digits')}` ({machine()}); seeds {list(seeds)}, "
        f"{epochs} training epochs, {finetune} fine-tuning epochs after pruning.",
        "",
        "| model | heads per layer | MLP units | test accuracy (median) | per seed | MACs | MACs ratio | LiteRT ms (1 thread) | latency ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| dense | 4 | 64 | {dense_accuracy:.4f} | {', '.join(f'{a:.4f}' for a in rows['dense'])} | {dense_macs} "
        f"| 1.00 | {latency['dense']:.4f} | 1.00 |",
    ]  # fmt: skip
    verdicts = []
    for rate in RATES:
        small, result = models[rate]
        macs = tfprune.analyze(small).macs
        heads = small.get_layer("block0_mha").num_heads
        units = small.get_layer("block0_mlp_in").units
        pruned_accuracy = statistics.median(rows[rate])
        lines.append(
            f"| pruned {rate:.0%} | {heads} | {units} | {pruned_accuracy:.4f} | "
            f"{', '.join(f'{a:.4f}' for a in rows[rate])} | {macs} | {dense_macs / macs:.2f} | "
            f"{latency[str(rate)]:.4f} | {latency['dense'] / latency[str(rate)]:.2f} |"
        )
        gap = (dense_accuracy - pruned_accuracy) * 100
        verdicts.append(f"at {rate:.0%} the pruned model is {gap:+.1f} points below the dense one"
                        + (" (within 2 points)" if gap <= 2 else " (behind by more than 2 points)"))  # fmt: skip
    lines += ["", "Median over the seeds: " + "; ".join(verdicts) + ". The latency ratio is the measured "
              "speed-up of the pruned file; the MACs ratio is the ideal one (attention's softmax, "
              "LayerNorm and the token reshapes do not shrink with the heads). The pruned models "
              "train for their fine-tuning epochs more than the dense one."]  # fmt: skip
    lines += ["", *keras_hub_vit_rows(args.quick)]
    if args.quick:
        lines += ["", "Quick mode: one seed, 2+1 epochs; the numbers only show that the pipeline runs."]
    write_section(SECTION, "\n".join(lines) + "\n")
    print("\n".join(lines))


def keras_hub_vit_rows(quick):
    """keras-hub's ViTBackbone, built from its constructor, dense and with half its heads and MLP units.

    Latency depends only on the widths, so the random weights of the
    constructor serve; the pruned model is not fine-tuned.
    """
    import keras_hub

    keras.utils.set_random_seed(0)
    size, depth, hidden = (32, 2, 32) if quick else (64, 4, 64)
    model = keras_hub.models.ViTBackbone(image_shape=(size, size, 3), patch_size=8, num_layers=depth,
                                         num_heads=4, hidden_dim=hidden, mlp_dim=2 * hidden)  # fmt: skip
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the patch-embedding layer is frozen and shared, as documented
        small, _ = tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)
    sample = np.random.default_rng(0).uniform(size=(4, size, size, 3)).astype("float32")
    with tempfile.TemporaryDirectory() as directory:
        paths = {"dense": os.path.join(directory, "dense.tflite"), "pruned": os.path.join(directory, "pruned.tflite")}
        errors = {name: tfprune.export.to_tflite(m, paths[name], sample_inputs=sample, verbose=0).max_abs_error
                  for name, m in (("dense", model), ("pruned", small))}  # fmt: skip
        latency = tfprune.export.compare_latency(paths, threads=1, runs=20 if quick else 200)
    macs = {name: tfprune.analyze(m).macs for name, m in (("dense", model), ("pruned", small))}
    return [
        f"keras-hub `ViTBackbone` from its constructor ({size}x{size} images, patch 8, {depth} layers, "
        f"4 heads, hidden {hidden}, MLP {2 * hidden}; random weights, not fine-tuned), pruned by "
        "`tfprune.prune(criterion=\"l1\", rate=0.5, round_to=1)`: the heads and MLP units of every block.",
        "",
        "| model | heads per layer | MACs (without the patch embedding) | MACs ratio | LiteRT ms (1 thread) "
        "| latency ratio | LiteRT max abs error |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| dense | 4 | {macs['dense']} | 1.00 | {latency['dense']:.4f} | 1.00 | {errors['dense']:.1e} |",
        f"| pruned 50% | 2 | {macs['pruned']} | {macs['dense'] / macs['pruned']:.2f} | {latency['pruned']:.4f} "
        f"| {latency['dense'] / latency['pruned']:.2f} | {errors['pruned']:.1e} |",
        "",
        "`tfprune.analyze` cannot count keras-hub's `ViTPatchingAndEmbedding` (its analysis is flagged "
        "incomplete), so both MAC figures leave out the patch embedding, which pruning does not change.",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, a few epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
