"""Data-parallel training on two JAX CPU devices with tfprune's callbacks.

Run as `python jax_data_parallel.py OUT_DIR` by `tests/test_multi_worker.py`:
it sets `XLA_FLAGS=--xla_force_host_platform_device_count=2` before JAX
starts, trains the three models of `worker.py` with `model.fit` under
`keras.distribution.DataParallel`, and writes, for every variable, whether
its value is replicated on both devices and equal on both, and the final
sparsities, to `OUT_DIR/jax.json`.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfprune  # noqa: E402


def cnn(conv, dense):
    inputs = keras.Input((8, 8, 1))
    x = conv(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, dense(4, name="logits")(x))


def main(out_dir):
    devices = keras.distribution.list_devices("cpu")
    assert len(devices) == 2, devices
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 4, len(x))
    builds = {
        "str_budget": lambda: (cnn(tfprune.layers.STRConv2D, tfprune.layers.STRDense),
                               [tfprune.callbacks.SparsityBudget(0.7, ramp_epochs=2)]),
        "magnitude": lambda: (tfprune.prune_low_magnitude(
            cnn(keras.layers.Conv2D, keras.layers.Dense),
            tfprune.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=2)),
            [tfprune.callbacks.UpdatePruningStep()]),
        "bn_sparsity": lambda: (cnn(keras.layers.Conv2D, keras.layers.Dense),
                                [tfprune.callbacks.BNSparsity(0.05, warmup_epochs=1)]),
    }  # fmt: skip
    result = {}
    for name, build in builds.items():
        keras.utils.set_random_seed(0)
        model, callbacks = build()
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
        model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=callbacks)
        variables = {}
        for variable in model.variables:
            value = variable.value
            shards = [np.asarray(shard.data) for shard in value.addressable_shards]
            variables[variable.path] = {
                "devices": len({shard.device for shard in value.addressable_shards}),
                "replicated": bool(value.sharding.is_fully_replicated),
                "equal": all(np.array_equal(shards[0], shard) for shard in shards[1:]),
            }
        result[name] = {"variables": variables}
        if name == "str_budget":
            result[name]["sparsity"] = tfprune.sparsity_report(model).global_sparsity
        if name == "magnitude":
            result[name]["sparsity"] = tfprune.magnitude.mask_sparsity(model)
    with open(os.path.join(out_dir, "jax.json"), "w") as file:
        json.dump({"devices": [str(device) for device in jax.devices()], "models": result}, file, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
