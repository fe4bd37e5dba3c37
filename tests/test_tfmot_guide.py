"""TensorFlow Model Optimization's pruning guide, run on Keras 3 through `tfprune.tfmot`.

The snippets follow TFMOT's comprehensive pruning guide (and its XNNPACK
policy example) section by section, in one namespace as in the notebook. Each
starts from TFMOT's code; the test swaps exactly one line, the import
`import tensorflow_model_optimization as tfmot`, for `import tfprune.tfmot as
tfmot`. The only other edits are what Keras 3 itself changed (weights files
must end in `.weights.h5`, models are saved as `.keras`), marked `# Keras 3:`.
The guide is TensorFlow code (`tf.keras`, `tf.GradientTape`, the TFLite
converter), so this file runs on the TensorFlow backend only.
"""

import os
import textwrap

import keras
import numpy as np
import pytest

import tfprune

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TFMOT's guide is TensorFlow code"
)

TFMOT_IMPORT = "import tensorflow_model_optimization as tfmot"
TFPRUNE_IMPORT = "import tfprune.tfmot as tfmot"

SETUP = """
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

input_shape = [20]
x_train = np.random.randn(1, 20).astype(np.float32)
y_train = tf.keras.utils.to_categorical(np.random.randn(1), num_classes=20)


def setup_model():
    model = tf.keras.Sequential([
        tf.keras.layers.Dense(20, input_shape=input_shape),
        tf.keras.layers.Flatten(),
    ])
    return model


def setup_pretrained_weights():
    model = setup_model()
    model.compile(loss=tf.keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"])
    model.fit(x_train, y_train, verbose=0)
    _, pretrained_weights = tempfile.mkstemp(".weights.h5")  # Keras 3: was ".tf"
    model.save_weights(pretrained_weights)
    return pretrained_weights


setup_model()
pretrained_weights = setup_pretrained_weights()
"""

PRUNE_WHOLE_MODEL = """
import tensorflow_model_optimization as tfmot

base_model = setup_model()
base_model.load_weights(pretrained_weights)  # optional but recommended for model accuracy
model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)
model_for_pruning.summary()
"""

PRUNE_SOME_LAYERS = """
import tensorflow_model_optimization as tfmot

base_model = setup_model()
base_model.load_weights(pretrained_weights)


def apply_pruning_to_dense(layer):
    if isinstance(layer, tf.keras.layers.Dense):
        return tfmot.sparsity.keras.prune_low_magnitude(layer)
    return layer


model_for_pruning = tf.keras.models.clone_model(base_model, clone_function=apply_pruning_to_dense)
model_for_pruning.summary()
"""

FUNCTIONAL_AND_SEQUENTIAL = """
import tensorflow_model_optimization as tfmot

i = tf.keras.Input(shape=(20,))
x = tfmot.sparsity.keras.prune_low_magnitude(tf.keras.layers.Dense(10))(i)
o = tf.keras.layers.Flatten()(x)
functional_for_pruning = tf.keras.Model(inputs=i, outputs=o)
functional_for_pruning.summary()

sequential_for_pruning = tf.keras.Sequential([
    tfmot.sparsity.keras.prune_low_magnitude(tf.keras.layers.Dense(20, input_shape=input_shape)),
    tf.keras.layers.Flatten(),
])
"""

CUSTOM_LAYER = """
import tensorflow_model_optimization as tfmot


class MyDenseLayer(tf.keras.layers.Dense, tfmot.sparsity.keras.PrunableLayer):
    def get_prunable_weights(self):
        # Prune bias also, though that usually harms model accuracy too much.
        return [self.kernel, self.bias]


custom_for_pruning = tf.keras.Sequential([
    tfmot.sparsity.keras.prune_low_magnitude(MyDenseLayer(20, input_shape=input_shape)),
    tf.keras.layers.Flatten(),
])
custom_for_pruning.compile(loss=tf.keras.losses.categorical_crossentropy, optimizer="adam")
custom_for_pruning.fit(x_train, y_train, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], verbose=0)
"""

TRAIN_WITH_FIT = """
import tensorflow_model_optimization as tfmot

base_model = setup_model()
base_model.load_weights(pretrained_weights)
model_for_pruning = tfmot.sparsity.keras.prune_low_magnitude(base_model)

log_dir = tempfile.mkdtemp()
callbacks = [
    tfmot.sparsity.keras.UpdatePruningStep(),
    # Log sparsity and other metrics in Tensorboard.
    tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir),
]
model_for_pruning.compile(
    loss=tf.keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"]
)
model_for_pruning.fit(x_train, y_train, callbacks=callbacks, epochs=2, verbose=0)
"""

CUSTOM_TRAINING_LOOP = """
import tensorflow_model_optimization as tfmot

base_model = setup_model()
base_model.load_weights(pretrained_weights)
loop_model = tfmot.sparsity.keras.prune_low_magnitude(base_model)

loss = tf.keras.losses.categorical_crossentropy
optimizer = tf.keras.optimizers.Adam()
log_dir = tempfile.mkdtemp()
unused_arg = -1
epochs = 2
batches = 1  # example is hardcoded so that the number of batches cannot change.

# Non-boilerplate.
loop_model.optimizer = optimizer
step_callback = tfmot.sparsity.keras.UpdatePruningStep()
step_callback.set_model(loop_model)
log_callback = tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir)  # Log sparsity and other metrics in Tensorboard.
log_callback.set_model(loop_model)

step_callback.on_train_begin()  # run pruning callback
for _ in range(epochs):
    log_callback.on_epoch_begin(epoch=unused_arg)  # run pruning callback
    for _ in range(batches):
        step_callback.on_train_batch_begin(batch=unused_arg)  # run pruning callback
        with tf.GradientTape() as tape:
            logits = loop_model(x_train, training=True)
            loss_value = loss(y_train, logits)
            grads = tape.gradient(loss_value, loop_model.trainable_variables)
            optimizer.apply_gradients(zip(grads, loop_model.trainable_variables))
    step_callback.on_epoch_end(batch=unused_arg)  # run pruning callback
"""

CHECKPOINT_AND_DESERIALIZE = """
import tensorflow_model_optimization as tfmot

_, keras_model_file = tempfile.mkstemp(".keras")  # Keras 3: was ".h5"
# Checkpoint: saving the optimizer is necessary (include_optimizer=True is the default).
model_for_pruning.save(keras_model_file)  # Keras 3: .keras files always hold the optimizer
# Deserialize model.
with tfmot.sparsity.keras.prune_scope():
    loaded_model = tf.keras.models.load_model(keras_model_file)
loaded_model.summary()
"""

STRIP_AND_EXPORT = """
import tensorflow_model_optimization as tfmot

final_model = tfmot.sparsity.keras.strip_pruning(model_for_pruning)
final_model.summary()
_, pruned_keras_file = tempfile.mkstemp(".keras")  # Keras 3: was ".h5"
tf.keras.models.save_model(final_model, pruned_keras_file)  # Keras 3: no include_optimizer
converter = tf.lite.TFLiteConverter.from_keras_model(final_model)
pruned_tflite_model = converter.convert()
"""

XNNPACK_POLICY = """
import tensorflow_model_optimization as tfmot

conv_model = tf.keras.Sequential([
    tf.keras.layers.InputLayer(input_shape=(28, 28, 1)),  # Keras 3: the `shape=` argument is also accepted
    tf.keras.layers.ZeroPadding2D(padding=1),
    tf.keras.layers.Conv2D(filters=16, kernel_size=(3, 3), strides=(2, 2), padding="valid"),
    tf.keras.layers.BatchNormalization(),
    tf.keras.layers.ReLU(),
    tf.keras.layers.DepthwiseConv2D(kernel_size=(3, 3), padding="same"),
    tf.keras.layers.Conv2D(filters=32, kernel_size=(1, 1)),
    tf.keras.layers.BatchNormalization(),
    tf.keras.layers.ReLU(),
    tf.keras.layers.Conv2D(filters=32, kernel_size=(1, 1)),
    tf.keras.layers.GlobalAveragePooling2D(),
    tf.keras.layers.Dense(10),
])
pruning_params_sparsity_0_75 = {
    "pruning_schedule": tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.25, final_sparsity=0.75, begin_step=0, end_step=4
    ),
    "pruning_policy": tfmot.sparsity.keras.PruneForLatencyOnXNNPack(),
}
policy_model = tfmot.sparsity.keras.prune_low_magnitude(conv_model, **pruning_params_sparsity_0_75)
policy_model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
policy_model.fit(
    np.random.rand(16, 28, 28, 1).astype("float32"), np.random.randint(0, 10, 16),
    batch_size=4, epochs=2, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
)
"""

SNIPPETS = [
    SETUP, PRUNE_WHOLE_MODEL, PRUNE_SOME_LAYERS, FUNCTIONAL_AND_SEQUENTIAL, CUSTOM_LAYER,
    TRAIN_WITH_FIT, CUSTOM_TRAINING_LOOP, CHECKPOINT_AND_DESERIALIZE, STRIP_AND_EXPORT, XNNPACK_POLICY,
]  # fmt: skip


def as_tfprune(snippet):
    """The snippet with TFMOT's import line replaced by tfprune's, and nothing else."""
    lines = textwrap.dedent(snippet).splitlines()
    assert TFMOT_IMPORT in lines, "every snippet starts from TFMOT's import"
    return "\n".join(TFPRUNE_IMPORT if line == TFMOT_IMPORT else line for line in lines)


def wrapper_names(model):
    return [layer.name for layer in tfprune.magnitude.pruning_wrappers(model)]


@pytest.fixture(scope="module")
def guide():
    namespace = {}
    for snippet in SNIPPETS:
        exec(compile(as_tfprune(snippet), "<tfmot guide>", "exec"), namespace)  # noqa: S102
    return namespace


def test_prune_whole_model_and_some_layers(guide):
    assert len(tfprune.magnitude.pruning_wrappers(guide["base_model"])) == 0  # the input is untouched
    clone = guide["apply_pruning_to_dense"]
    assert isinstance(clone(keras.layers.Dense(3)), tfprune.magnitude.PruneLowMagnitude)
    assert isinstance(clone(keras.layers.Flatten()), keras.layers.Flatten)


def test_functional_sequential_and_custom_layers_are_wrapped(guide):
    assert len(wrapper_names(guide["functional_for_pruning"])) == 1
    assert len(wrapper_names(guide["sequential_for_pruning"])) == 1
    custom = tfprune.magnitude.pruning_wrappers(guide["custom_for_pruning"])[0]
    assert [weight.name for weight in tfprune.magnitude.prunable_weights(custom.layer)] == ["kernel", "bias"]
    assert tfprune.magnitude.mask_sparsity(guide["custom_for_pruning"]) == pytest.approx(0.5, abs=0.01)


def test_fit_with_callbacks_reaches_the_default_sparsity(guide):
    # TFMOT's default schedule: ConstantSparsity(0.5, begin_step=0).
    assert tfprune.magnitude.mask_sparsity(guide["model_for_pruning"]) == pytest.approx(0.5)
    summaries = guide["callbacks"][1]
    assert isinstance(summaries, tfprune.callbacks.PruningSummaries)
    assert any(name.startswith("events") for name in os.listdir(os.path.join(summaries.log_dir, "pruning")))


def test_custom_training_loop_prunes_counts_steps_and_logs(guide):
    model = guide["loop_model"]
    events = os.listdir(os.path.join(guide["log_callback"].log_dir, "pruning"))
    assert any(name.startswith("events") for name in events)  # the loop calls only on_epoch_begin
    assert tfprune.magnitude.mask_sparsity(model) == pytest.approx(0.5)
    assert [int(wrapper.pruning_step.numpy()) for wrapper in tfprune.magnitude.pruning_wrappers(model)] == [2]
    kernel = tfprune.magnitude.pruning_wrappers(model)[0].layer.kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5)


def test_checkpoint_strip_and_tflite_export(guide):
    assert wrapper_names(guide["loaded_model"]) == wrapper_names(guide["model_for_pruning"])
    final = guide["final_model"]
    assert not tfprune.magnitude.pruning_wrappers(final)
    assert np.mean(final.layers[0].kernel.numpy() == 0) == pytest.approx(0.5)
    assert len(guide["pruned_tflite_model"]) > 0


def test_xnnpack_policy_prunes_only_pointwise_convolutions(guide):
    model = guide["policy_model"]
    wrapped = tfprune.magnitude.pruning_wrappers(model)
    assert [(wrapper.layer.kernel_size, wrapper.layer.strides) for wrapper in wrapped] == [((1, 1), (1, 1))] * 2
    assert tfprune.magnitude.mask_sparsity(model) == pytest.approx(0.75, abs=0.01)
