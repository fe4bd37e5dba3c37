"""Structured pruning of MobileNetV3 on the offline digits data (minutes on a CPU).

The method of Liu & Lei (2022): sparse training of the BatchNormalization
scales (Network Slimming; `BNSparsity`'s defaults, a proximal step in Adam's
metric that zeroes whole channels), pruning of the 1x1 expansion convs of the
inverted-residual blocks by the filter importance γ·S at one global
threshold, fine-tuning, and export to TFLite for phones.

    .venv/bin/python examples/mobilenetv3_digits.py --output /tmp/digits

Everything runs offline: the data is scikit-learn's bundled digits.
"""

import argparse
import os

import keras

import tfprune


def compile_model(model, learning_rate):
    """Compiles `model` for integer-label classification with Adam."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def accuracy(model, test):
    """Test accuracy of a compiled model."""
    return model.evaluate(test, verbose=0, return_dict=True)["accuracy"]


def sparse_train_prune_fine_tune(model, train, test, args):
    """Sparse training, pruning and fine-tuning; returns the pruned model and PruneResult."""
    # targets: penalise the channels that are pruned below (γ and β of their BNs)
    sparsity = tfprune.callbacks.BNSparsity(args.l1, targets="expansion")
    compile_model(model, args.learning_rate)
    model.fit(train, epochs=args.epochs, callbacks=[sparsity], verbose=2)
    print(f"sparse-trained accuracy: {accuracy(model, test):.4f}; γ statistics: {sparsity.gamma_statistics()}")

    pruned, result = tfprune.prune(model, args.criterion, rate=args.rate, targets="expansion")
    print(result)
    compile_model(pruned, args.learning_rate)
    # nearly the sparse-trained accuracy when the share of zeros above reaches the rate
    print(f"pruned accuracy before fine-tuning: {accuracy(pruned, test):.4f}")
    pruned.fit(train, epochs=args.fine_tune_epochs, verbose=2)
    print(f"pruned accuracy after fine-tuning: {accuracy(pruned, test):.4f}")

    os.makedirs(args.output, exist_ok=True)
    tfprune.plots.widths(result, path=os.path.join(args.output, "widths.png"))
    tfprune.plots.gamma_distribution(
        {f"l1={args.l1:g}": model}, path=os.path.join(args.output, "gamma.png")
    )
    pruned.save(os.path.join(args.output, "pruned.keras"))
    tfprune.export.to_tflite(pruned, os.path.join(args.output, "pruned.tflite"))
    print(f"wrote pruned.keras, pruned.tflite, widths.png and gamma.png to {args.output}")
    return pruned, result


def argument_parser(description, **defaults):
    """The command-line options shared by the MobileNetV3 examples."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--variant", default="large", choices=("large", "small"))
    parser.add_argument("--epochs", type=int, default=defaults.get("epochs", 10))
    parser.add_argument("--fine-tune-epochs", type=int, default=defaults.get("fine_tune_epochs", 5))
    parser.add_argument("--l1", type=float, default=tfprune.callbacks.BNSparsity().l1,
                        help="BNSparsity strength (default: its default)")
    parser.add_argument("--criterion", default="sparsity_gamma", choices=tfprune.criteria.available())
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=defaults.get("output", "mobilenetv3_output"))
    return parser


def main(argv=None):
    args = argument_parser(__doc__.splitlines()[0], output="mobilenetv3_digits").parse_args(argv)
    train, test = tfprune.datasets.digits(image_size=32, batch_size=64, seed=args.seed)
    model = tfprune.models.mobilenet_v3(args.variant, input_shape=(32, 32, 3), seed=args.seed)
    sparse_train_prune_fine_tune(model, train, test, args)


if __name__ == "__main__":
    main()
