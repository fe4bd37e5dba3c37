"""One worker of the multi-worker tests: trains three small models with tfprune's callbacks.

Run as `python worker.py INDEX PORTS OUT_DIR [--broken]` by
`tests/test_multi_worker.py`, two at a time, each with its own `TF_CONFIG`
(a cluster of `localhost` workers). Under `MultiWorkerMirroredStrategy` every
model trains with a custom loop that calls the callbacks as `fit` would:
Keras 3.15's `fit` cannot run under this strategy (it reduces a tuple of
batches and averages scalar logs over axis 0, both errors). After training,
the worker writes all its variables (weights, STR thresholds, masks,
counters, BN statistics) to `OUT_DIR/worker-INDEX.npz`; the chief (index 0)
also saves each model as `.keras`. `--broken` makes worker 1 rescale its STR
thresholds towards another target, so that its state differs.
"""

import json
import os
import sys

INDEX, PORTS, OUT_DIR = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
BROKEN = "--broken" in sys.argv
os.environ["TF_CONFIG"] = json.dumps(
    {"cluster": {"worker": [f"localhost:{port}" for port in PORTS]}, "task": {"type": "worker", "index": INDEX}}
)
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfprune  # noqa: E402

STEPS_PER_EPOCH, EPOCHS, GLOBAL_BATCH = 4, 3, 32


def data():
    rng = np.random.default_rng(0)  # the same arrays on every worker; the strategy shards them
    x = rng.normal(size=(STEPS_PER_EPOCH * GLOBAL_BATCH, 8, 8, 1)).astype("float32")
    return x, rng.integers(0, 4, len(x))


def cnn(conv, dense):
    inputs = keras.Input((8, 8, 1))
    x = conv(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.BatchNormalization(synchronized=True, name="bn")(x)  # batch statistics of all workers
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, dense(4, name="logits")(x))


def scenarios():
    def str_budget():
        model = cnn(tfprune.layers.STRConv2D, tfprune.layers.STRDense)
        target = 0.8 if (BROKEN and INDEX == 1) else 0.7
        return model, [tfprune.callbacks.SparsityBudget(target, ramp_epochs=2)]

    def magnitude():
        schedule = tfprune.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=2)
        plain = cnn(keras.layers.Conv2D, keras.layers.Dense)
        return tfprune.prune_low_magnitude(plain, schedule), [tfprune.callbacks.UpdatePruningStep()]

    def bn_sparsity():
        model = cnn(keras.layers.Conv2D, keras.layers.Dense)
        return model, [tfprune.callbacks.BNSparsity(0.05, warmup_epochs=1)]

    return {"str_budget": str_budget, "magnitude": magnitude, "bn_sparsity": bn_sparsity}


def train(strategy, build):
    keras.utils.set_random_seed(INDEX)  # different seeds: the strategy must sync the initial values
    with strategy.scope():
        model, callbacks = build()
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        optimizer.build(model.trainable_variables)
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    distributed = strategy.experimental_distribute_dataset(dataset)
    loss_function = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="sum"
    )

    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = loss_function(labels, logits) / GLOBAL_BATCH + tf.add_n(model.losses or [0.0])
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def distributed_step(batch):
        losses = strategy.run(step, args=batch)
        return strategy.reduce("SUM", losses, axis=None)

    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=EPOCHS, steps=STEPS_PER_EPOCH)
    callback_list.on_train_begin()
    for epoch in range(EPOCHS):
        callback_list.on_epoch_begin(epoch)
        for batch, values in enumerate(distributed):
            callback_list.on_train_batch_begin(batch)
            loss = distributed_step(values)
            callback_list.on_train_batch_end(batch, {"loss": float(loss)})
        callback_list.on_epoch_end(epoch, {})
    callback_list.on_train_end()
    return model


def main():
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    assert strategy.num_replicas_in_sync == len(PORTS), strategy.num_replicas_in_sync
    state = {}
    for name, build in scenarios().items():
        model = train(strategy, build)
        for variable in model.variables:
            state[f"{name}/{variable.path}"] = keras.ops.convert_to_numpy(variable.value)
        if INDEX == 0:
            model.save(os.path.join(OUT_DIR, f"{name}.keras"))
    np.savez(os.path.join(OUT_DIR, f"worker-{INDEX}.npz"), **state)
    print(f"worker {INDEX} done", flush=True)


if __name__ == "__main__":
    main()
