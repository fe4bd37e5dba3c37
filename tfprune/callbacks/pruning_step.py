"""`UpdatePruningStep` advances magnitude-pruning schedules in `model.fit`; `PruningSummaries` logs them."""

import os

import keras
import numpy as np

from tfprune._optional import require_tensorflow
from tfprune._utils import is_integer, write_summary
from tfprune.magnitude.prune import _require_wrappers, mask_sparsity

__all__ = ["PruningSummaries", "UpdatePruningStep"]


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

    Distributed training: every worker (and, under a mirrored strategy, the
    callback once for all local replicas) recomputes the masks from the same
    replicated weights at the same global step, deterministically, so masks
    and counters stay identical across workers (`tests/test_multi_worker.py`).

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
            tf = require_tensorflow("Writing TensorBoard summaries (log_dir=...)")

            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "pruning"))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_first_step = self._counter()

    def on_train_batch_begin(self, batch, logs=None):
        if batch is None or batch < 0:
            # TFMOT's guide drives the callback by hand in custom loops with
            # `batch=-1`: the step is then the counter's next value.
            self._epoch_first_step, batch = self._counter(), 0
        self._last_step = self._epoch_first_step + batch
        self.model  # noqa: B018 - syncs the JAX training state before the masks change
        for wrapper in self._wrappers:
            wrapper.update_pruning_step(self._last_step)

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution > 1 one call covered steps up to `batch`.
        hand_driven = batch is None or batch < 0  # TFMOT's custom loop: the counter already moved
        step = self._last_step if hand_driven else self._epoch_first_step + batch
        if keras.backend.backend() == "jax":
            # The JAX optimizer step cannot read the masks (they are not part of its
            # state), so pruned weights are zeroed here, after every step.
            self.model  # noqa: B018 - syncs the JAX training state
            for wrapper in self._wrappers:
                wrapper.apply_masks()
        if step != self._last_step:
            for wrapper in self._wrappers:
                wrapper.pruning_step.assign(step + 1)

    def on_epoch_end(self, epoch=None, logs=None, batch=None):
        # `batch=`: TFMOT's guide calls `on_epoch_end(batch=...)` in custom loops.
        sparsity = mask_sparsity(self.model)
        if logs is not None:
            logs["pruning_sparsity"] = sparsity
        if self._writer is not None:
            _write_pruning_summaries(self._writer, self.model, self._wrappers, self._counter())

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _write_pruning_summaries(writer, model, wrappers, step):
    """Writes the global and per-layer mask sparsity and schedule targets at `step`."""
    with writer.as_default(step=step):
        write_summary("pruning/sparsity", np.float32(mask_sparsity(model)))
        for name, value in mask_sparsity(model, by_layer=True).items():
            write_summary(f"pruning/{name}/sparsity", np.float32(value))
        for wrapper in wrappers:
            target = wrapper.schedule.sparsity(step - 1)
            write_summary(f"pruning/{wrapper.name}/target_sparsity", np.float32(target))
    writer.flush()


class PruningSummaries(keras.callbacks.Callback):
    """Writes magnitude-pruning progress for TensorBoard: TFMOT's `PruningSummaries`.

    Under `log_dir/pruning` it writes the share of masked-out weights over all
    `PruneLowMagnitude` layers (`pruning/sparsity`), each layer's mask
    sparsity (`pruning/<layer>/sparsity`) and its schedule's target
    (`pruning/<layer>/target_sparsity`), at the global pruning step. Use it
    beside `UpdatePruningStep` (which does the pruning; its own `log_dir`
    writes the same summaries once per epoch). TensorFlow only, like Keras's
    `TensorBoard` callback. With several workers, give each its own
    `log_dir` (or keep the callback on the chief only): they write the same
    values.

    Summaries are written at the start of every epoch (as TFMOT does, so a
    custom loop that calls only `on_epoch_begin` logs too), at the end of
    training and, with `update_freq` a number of batches, after every N
    batches.

    Args:
        log_dir: String or path. TensorBoard log directory.
        update_freq: `"epoch"` (default), `"batch"`, or an int N: write once
            per epoch, or also after every batch, or after every N batches.
        **kwargs: TFMOT passes Keras `TensorBoard` arguments through; they are
            accepted for compatibility and ignored.

    Raises:
        TypeError: If `log_dir` is not a path.
        ValueError: If `update_freq` is not `"epoch"`, `"batch"` or a positive
            int; at `on_train_begin`, if the model has no `PruneLowMagnitude` layer.

    Example:

    >>> import keras, numpy as np, tfprune, tempfile
    >>> inputs = keras.Input((8,))
    >>> model = tfprune.prune_low_magnitude(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    >>> model.compile("sgd", "mse")
    >>> history = model.fit(np.ones((8, 8)), np.ones((8, 2)), verbose=0, callbacks=[
    ...     tfprune.callbacks.UpdatePruningStep(),
    ...     tfprune.callbacks.PruningSummaries(log_dir=tempfile.mkdtemp())])
    """

    def __init__(self, log_dir, update_freq="epoch", **kwargs):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"`log_dir` must be a path. Received: log_dir={log_dir!r}")
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and not (is_integer(update_freq) and update_freq > 0):
            raise ValueError(
                "`update_freq` must be 'epoch', 'batch' or a positive int. "
                f"Received: update_freq={update_freq!r}"
            )
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self._writer = None
        self._wrappers = []
        self._batches = 0

    def _ensure_writer(self):
        if self._writer is None:
            tf = require_tensorflow("Writing TensorBoard summaries (log_dir=...)")

            self._wrappers = _require_wrappers(self.model, "PruningSummaries")
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "pruning"))

    def _write(self):
        self._ensure_writer()
        if not all(wrapper.built for wrapper in self._wrappers):
            return  # a model built by its first batch has nothing to report before it
        step = int(keras.ops.convert_to_numpy(self._wrappers[0].pruning_step.value))
        _write_pruning_summaries(self._writer, self.model, self._wrappers, step)

    def on_train_begin(self, logs=None):
        self._ensure_writer()

    def on_epoch_begin(self, epoch=None, logs=None):
        self._write()

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.update_freq != "epoch" and self._batches % self.update_freq == 0:
            self._write()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._write()
            self._writer.close()
            self._writer = None
