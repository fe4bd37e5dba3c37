"""Network Slimming sparsity training of BatchNormalization scales (METHODS.md §4)."""

import os

import keras
import numpy as np
from keras import ops

from tfprune._utils import write_summary

_MODES = ("subgradient", "proximal")


def batch_norm_layers(model):
    """Returns every BatchNormalization layer with a trainable scale, nested models included.

    Args:
        model: A Keras model (or layer with sub-layers).

    Returns:
        List of `keras.layers.BatchNormalization` layers, in graph order.

    Example:

    >>> import keras
    >>> from tfprune.callbacks.bn_sparsity import batch_norm_layers
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    >>> len(batch_norm_layers(model))
    1
    """
    found = []
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.scale and layer.trainable:
                found.append(layer)
        elif getattr(layer, "layers", None):
            found.extend(batch_norm_layers(layer))
    return found


class _ScheduledL1:
    """`strength * Σ|γ|` plus whatever regularizer γ already had; strength is a variable."""

    def __init__(self, strength, original):
        self.strength = strength
        self.original = original

    def __call__(self, x):
        penalty = ops.cast(self.strength, x.dtype) * ops.sum(ops.abs(x))
        if self.original is not None:
            penalty = penalty + self.original(x)
        return penalty


def _histogram(values, bins=30):
    """TensorBoard's histogram tensor: one row `(left edge, right edge, count)` per bin."""
    counts, edges = np.histogram(values, bins=bins)
    return np.stack([edges[:-1], edges[1:], counts]).T.astype("float64")


class BNSparsity(keras.callbacks.Callback):
    """Trains with an L1 penalty on every BatchNormalization scale γ (Network Slimming).

    Two ways to apply the penalty `l1 * Σ|γ|` at every batch:

    - `"subgradient"` (the reference): while `fit` runs, every γ carries an
      extra regularizer `l1 * Σ|γ|` whose gradient is exactly `l1 * sign(γ)`,
      so the subgradient is added to γ's loss gradient and goes through the
      optimizer (momentum, Adam scaling) like in the reference implementation.
      The callback installs the regularizer at `on_train_begin`, rebuilds the
      train function, and removes it again at `on_train_end`: the model is
      left without any extra regularizer and its config is unchanged.
      Under `tf.distribute` the penalty is scaled like any Keras loss, so its
      gradient is `l1 * sign(γ)` once, whatever the number of replicas.
    - `"proximal"`: after each optimizer step, γ is soft-thresholded,
      `γ ← sign(γ) * max(|γ| - lr * l1, 0)`, with `lr` the optimizer's current
      learning rate (times the number of steps when `steps_per_execution > 1`).
      Unlike the subgradient, this produces exact zeros.

    The strength of epoch `e` is `0` while `e < warmup_epochs`, then
    `schedule(e, l1)` if a schedule is given, else `l1`. At the end of each
    epoch the logs get `bn_gamma_l1` (the strength used), `bn_gamma_mean_abs`
    and `bn_gamma_below_<t>` (the share of all γ with `|γ| < t`) for each
    threshold; with `log_dir`, a histogram of all |γ| and those shares are
    written for TensorBoard under `log_dir/bn_sparsity`.

    Args:
        l1: Float. Strength λ (1e-5 for MobileNetV3 in Liu & Lei). Defaults to `1e-5`.
        mode: String. `"subgradient"` or `"proximal"`. Defaults to `"subgradient"`.
        warmup_epochs: Int. Epochs trained without the penalty first. Defaults to `0`.
        schedule: Optional callable `(epoch, l1) -> float` giving the strength
            of each epoch after the warm-up. Defaults to `None` (constant `l1`).
        log_dir: Optional string. TensorBoard directory for γ histograms.
        thresholds: Tuple of floats. Thresholds of the logged shares.
            Defaults to `(1e-3, 1e-2, 1e-1)`.

    Raises:
        ValueError: If an argument is out of range, or at `on_train_begin` if
            the model has no BatchNormalization layer with a trainable scale.

    Example:

    >>> import keras, numpy as np, tfprune
    >>> inputs = keras.Input((4,))
    >>> x = keras.layers.BatchNormalization()(keras.layers.Dense(8)(inputs))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(x))
    >>> model.compile("sgd", "mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 2)), verbose=0,
    ...                     callbacks=[tfprune.callbacks.BNSparsity(1e-4)])
    >>> "bn_gamma_below_0.01" in history.history
    True
    """

    def __init__(
        self,
        l1=1e-5,
        mode="subgradient",
        warmup_epochs=0,
        schedule=None,
        log_dir=None,
        thresholds=(1e-3, 1e-2, 1e-1),
    ):
        super().__init__()
        if isinstance(l1, bool) or not isinstance(l1, (int, float)) or l1 < 0:
            raise ValueError(f"`l1` must be a non-negative number such as 1e-5. Received: l1={l1!r}")
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}. Received: mode={mode!r}")
        if not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(
                f"`warmup_epochs` must be a non-negative int. Received: warmup_epochs={warmup_epochs!r}"
            )
        if schedule is not None and not callable(schedule):
            raise TypeError(
                "`schedule` must be a callable `(epoch, l1) -> float` or None. "
                f"Received: schedule={schedule!r}"
            )
        self.l1 = float(l1)
        self.mode = mode
        self.warmup_epochs = warmup_epochs
        self.schedule = schedule
        self.log_dir = log_dir
        self.thresholds = tuple(float(t) for t in thresholds)
        self._strength = None
        self._gammas = []
        self._original_regularizers = []
        self._writer = None
        self._first_step = 0

    def strength(self, epoch):
        """Returns the penalty strength used during `epoch` (0-based).

        Args:
            epoch: Int. The epoch index.

        Returns:
            Float. `0` during the warm-up, then `schedule(epoch, l1)` or `l1`.

        Example:

        >>> import tfprune
        >>> tfprune.callbacks.BNSparsity(1e-4, warmup_epochs=2).strength(1)
        0.0
        """
        if epoch < self.warmup_epochs:
            return 0.0
        if self.schedule is not None:
            return float(self.schedule(epoch, self.l1))
        return self.l1

    def on_train_begin(self, logs=None):
        layers = batch_norm_layers(self.model)
        if not layers:
            raise ValueError(
                f"BNSparsity found no BatchNormalization layer with a trainable scale in model "
                f"'{self.model.name}'; add BatchNormalization(scale=True) layers or drop the callback."
            )
        self._gammas = [layer.gamma for layer in layers]
        self._strength = keras.Variable(0.0, trainable=False, dtype="float32", name="bn_l1")
        if self.mode == "subgradient":
            self._original_regularizers = [gamma.regularizer for gamma in self._gammas]
            for gamma, original in zip(self._gammas, self._original_regularizers):
                gamma.regularizer = _ScheduledL1(self._strength, original)
            # The train function traced before this point does not know the new penalty.
            self.model.make_train_function(force=True)
        if self.log_dir is not None:
            import tensorflow as tf  # TensorBoard summaries are TensorFlow-only

            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "bn_sparsity"))

    def on_epoch_begin(self, epoch, logs=None):
        self._strength.assign(self.strength(epoch))

    def on_train_batch_begin(self, batch, logs=None):
        self._first_step = batch

    def on_train_batch_end(self, batch, logs=None):
        if self.mode != "proximal":
            return
        steps = batch - self._first_step + 1
        learning_rate = ops.convert_to_numpy(self.model.optimizer.learning_rate)
        threshold = float(learning_rate) * float(self._strength.numpy()) * steps
        if threshold <= 0:
            return
        for gamma in self._gammas:
            value = gamma.value
            gamma.assign(ops.sign(value) * ops.maximum(ops.abs(value) - threshold, 0.0))

    def gamma_statistics(self):
        """Returns the current |γ| statistics that are logged each epoch.

        Returns:
            Dict with `bn_gamma_mean_abs` and `bn_gamma_below_<t>` for each threshold.

        Example:

        >>> # after model.fit(..., callbacks=[callback]):
        >>> # callback.gamma_statistics()["bn_gamma_below_0.01"]
        """
        magnitudes = self._all_magnitudes()
        statistics = {"bn_gamma_mean_abs": float(magnitudes.mean())}
        for threshold in self.thresholds:
            statistics[f"bn_gamma_below_{threshold:g}"] = float(np.mean(magnitudes < threshold))
        return statistics

    def _all_magnitudes(self):
        return np.concatenate([np.abs(keras.ops.convert_to_numpy(g.value)) for g in self._gammas])

    def on_epoch_end(self, epoch, logs=None):
        statistics = self.gamma_statistics()
        statistics["bn_gamma_l1"] = float(self._strength.numpy())
        if logs is not None:
            logs.update(statistics)
        if self._writer is not None:
            with self._writer.as_default(step=epoch):
                write_summary("bn_gamma/abs", _histogram(self._all_magnitudes()), "histograms")
                for name, value in statistics.items():
                    write_summary(f"bn_gamma/{name}", np.float32(value), "scalars")
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self.mode == "subgradient":
            for gamma, original in zip(self._gammas, self._original_regularizers):
                gamma.regularizer = original
            self.model.make_train_function(force=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
