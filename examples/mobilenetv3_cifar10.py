"""Structured pruning of MobileNetV3-Large on CIFAR-10 (Liu & Lei 2022, end to end).

Sparse training of BN γ (the paper: L1 λ = 1e-5, Adam 1e-3; here BNSparsity's
proximal channel penalty, which reaches exact zeros under Adam),
pruning of the expansion convs by γ·S at rate 0.5, fine-tuning, TFLite export.
First prints the params/MACs table of the same pruning on the 224x224
MobileNetV3-Large that the paper reports (-44.5% params, -40% FLOPs).

CIFAR-10 comes from tensorflow-datasets; this script never downloads unless
asked to (`--download`). Prepare the data once with `tfds build cifar10` on a
machine with internet access, or smoke-test the pipeline with `--mock-data`:

    .venv/bin/python examples/mobilenetv3_cifar10.py --data-dir ~/tensorflow_datasets
    .venv/bin/python examples/mobilenetv3_cifar10.py --mock-data --epochs 1 --fine-tune-epochs 1
"""

import os
import sys

import keras

import tfprune

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mobilenetv3_digits import argument_parser, sparse_train_prune_fine_tune  # noqa: E402


def paper_table():
    """Prints what the MobileNetV3 method removes from MobileNetV3-Large at 224x224."""
    model = keras.applications.MobileNetV3Large(weights=None, input_shape=(224, 224, 3), classes=10)
    _, result = tfprune.prune(model, "sparsity_gamma", rate=0.5, targets="expansion")
    print("MobileNetV3-Large 224x224, sparsity_gamma, rate 0.5, expansion convs:")
    print(result)
    print("(Liu & Lei report -44.5% params and -40% FLOPs)\n")


def main(argv=None):
    parser = argument_parser(__doc__.splitlines()[0], epochs=50, fine_tune_epochs=20, output="mobilenetv3_cifar10")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--download", action="store_true", help="let TFDS download CIFAR-10")
    parser.add_argument("--mock-data", action="store_true", help="TFDS mock data (pipeline smoke test)")
    args = parser.parse_args(argv)
    paper_table()

    def load():
        return tfprune.datasets.cifar10(
            data_dir=args.data_dir, augment=True, batch_size=128, seed=args.seed, download=args.download
        )

    if args.mock_data:
        import tensorflow_datasets as tfds

        with tfds.testing.mock_data(num_examples=256):
            train, test = load()
    else:
        train, test = load()
    model = tfprune.models.mobilenet_v3(args.variant, input_shape=(32, 32, 3), seed=args.seed)
    sparse_train_prune_fine_tune(model, train, test, args)


if __name__ == "__main__":
    main()
