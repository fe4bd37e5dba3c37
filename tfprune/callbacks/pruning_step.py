"""`UpdatePruningStep`: advances magnitude-pruning schedules during `model.fit`."""

import os

import keras
import numpy as np

from tfprune._utils import write_summary
from tfprune.magnitude.prune import _require_wrappers, mask_sparsity


class UpdatePruningStep(keras.callbacks.Callback):
    """Advances the pruning schedules of a model's `PruneLowMagnitude` layers in `fit`.

    Before every training batch, each wrapper's masks are updated for the
    current step if its schedule prunes then (see
    `PruneLowMagnitude.update_pruning_step`). The step is global: it continues
    from the wrappers' saved `pruning_step` counters, so a model loaded from a
    `.keras` file mid-training resumes where it stopped. With
    `steps_per_execution=k`, masks are updated once per execution, at its
    first step, and the counter advances by `k`.

    At the end of each epoch the logs get `pruning_sparsity`, the share of
    masked-out weights over all pruned layers; with `log_dir`, it and each
    layer's mask sparsity and schedule target are written for TensorBoard under
    `log_dir/pruning`, at the global step.

    This is TensorFlow Model Optimization's `UpdatePruningStep` (plus its
    `PruningSummaries` when `log_dir` is given). Put a `ModelCheckpoint` after
    this callback in the list so that the saved counters include the batch.

    Args:
        log_dir: Optional string. TensorBoard log directory. Defaults to `None`.

    Raises:
        ValueError: At `on_train_begin`, if the model has no `PruneLowMagnitude` layer.

    Example:

    >>> import keras, numpy as np, tfprune
    >>> inputs = keras.Input((8,))
    >>> model = tfprune.prune_low_magnitude(
    ...     keras.Model(inputs, keras.layers.Dense(2)(inputs)),
    ...     schedule=tfprune.ConstantSparsity(0.5, frequency=1))
    >>> model.compile("sgd", "mse")
    >>> history = model.fit(np.ones((8, 8)), np.ones((8, 2)), verbose=0,
    ...                     callbacks=[tfprune.callbacks.UpdatePruningStep()])
    >>> history.history["pruning_sparsity"]
    [0.5]
    """

    def __init__(self, log_dir=None):
        super().__init__()
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"`log_dir` must be a path or None. Received: log_dir={log_dir!r}")
        self.log_dir = log_dir
        self._wrappers = []
        self._writer = None
        self._epoch_first_step = 0
        self._last_step = -1

    def _counter(self):
        self.model  # noqa: B018 - on JAX, reading `model` puts the training state back in the variables
        return int(keras.ops.convert_to_numpy(self._wrappers[0].pruning_step.value))

    def on_train_begin(self, logs=None):
        self._wrappers = _require_wrappers(self.model, "UpdatePruningStep")
        if self.log_dir is not None:
            import tensorflow as tf  # TensorBoard summaries are TensorFlow-only

            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "pruning"))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_first_step = self._counter()

    def on_train_batch_begin(self, batch, logs=None):
        self._last_step = self._epoch_first_step + batch
        self.model  # noqa: B018 - syncs the JAX training state before the masks change
        for wrapper in self._wrappers:
            wrapper.update_pruning_step(self._last_step)

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution > 1 one call covered steps up to `batch`.
        step = self._epoch_first_step + batch
        if keras.backend.backend() == "jax":
            # The JAX optimizer step cannot read the masks (they are not part of its
            # state), so pruned weights are zeroed here, after every step.
            self.model  # noqa: B018 - syncs the JAX training state
            for wrapper in self._wrappers:
                wrapper.apply_masks()
        if step != self._last_step:
            for wrapper in self._wrappers:
                wrapper.pruning_step.assign(step + 1)

    def on_epoch_end(self, epoch, logs=None):
        sparsity = mask_sparsity(self.model)
        if logs is not None:
            logs["pruning_sparsity"] = sparsity
        if self._writer is not None:
            step = self._counter()
            with self._writer.as_default(step=step):
                write_summary("pruning/sparsity", np.float32(sparsity))
                for name, value in mask_sparsity(self.model, by_layer=True).items():
                    write_summary(f"pruning/{name}/sparsity", np.float32(value))
                for wrapper in self._wrappers:
                    target = wrapper.schedule.sparsity(step - 1)
                    write_summary(f"pruning/{wrapper.name}/target_sparsity", np.float32(target))
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
