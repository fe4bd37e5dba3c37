"""Network Slimming sparsity training of BatchNormalization scales (docs/METHODS.md §4, §11)."""

import os

import keras
import numpy as np
from keras import ops

from tfprune._optional import require_tensorflow
from tfprune._utils import write_summary
from tfprune.callbacks._bn_control import (
    adapt_strength,
    check_arguments,
    share_quantile,
    tracking_error,
)
from tfprune.callbacks._bn_proximal import channel_coordinates, effective_step, group_soft_threshold
from tfprune.structure import batch_norm_layers as batch_norm_layers  # read from here by the tests

__all__ = ["BNSparsity"]


class _ScheduledL1:
    """`strength * Σ|γ|` plus whatever regularizer γ already had; strength is a variable."""

    def __init__(self, strength, original):
        self.strength = strength
        self.original = original

    def __call__(self, x):
        # sign(x) * x: |x| with subgradient sign(x), 0 at 0 on every backend (not JAX's abs).
        penalty = ops.cast(self.strength, x.dtype) * ops.sum(ops.sign(x) * x)
        if self.original is not None:
            penalty = penalty + self.original(x)
        return penalty


def _histogram(values, bins=30):
    """TensorBoard's histogram tensor: one row `(left edge, right edge, count)` per bin."""
    counts, edges = np.histogram(values, bins=bins)
    return np.stack([edges[:-1], edges[1:], counts]).T.astype("float64")


class BNSparsity(keras.callbacks.Callback):
    """Sparsity training of BatchNormalization scales (Network Slimming), proximal by default.

    Trains with a penalty on the BN parameters of the channels that
    `tfprune.prune` will score, so that after training most channels are
    exactly zero and removing them changes nothing before fine-tuning.

    **Default (`mode="proximal"`, `penalty="channel"`)**: after each
    optimizer step, every channel `c` of the targeted channel groups is
    shrunk by the proximal operator of `l1 * ||u_c||_2`, where `u_c` holds γ
    and β of every BatchNormalization on that channel (for MobileNetV3's
    expansion groups: the expansion BN and the depthwise BN):
    `u_c ← u_c * max(0, 1 - l1 * η_c / ||u_c||)`, with `η_c` the step the
    optimizer really took on those coordinates (`effective_step`: the
    learning rate under SGD, `lr / sqrt(v̂)` under Adam). Why, by measurement
    (`benchmarks/bn_sparsity_digits.py`, the "BN-γ sparsity training"
    section of RESULTS.md, and issue 15):

    - The subgradient `l1 * sign(γ)` goes through Adam's normalisation, so
      each γ moves by at most the learning rate per step whatever `l1` is:
      from γ = 1, a few hundred steps at 1e-3 cannot reach 0 (issue 15: 0%
      below 1e-2 on MobileNetV3-Large and a VGG-BN; the tests: 0% on a
      64-channel task where the proximal channel penalty at 0.05 zeroes half).
    - A proximal step with the learning rate as step (the old `"proximal"`)
      has the same budget, `lr * l1` per step.
    - The proximal step in Adam's own metric zeroes a channel once its loss
      gradient stays below `l1`: the threshold `l1 * lr / sqrt(v̂)` is large
      exactly for the scales whose gradient is small (ProxGen, Yun et al. 2021).
    - Zeroing γ alone is not enough: a channel with γ = 0 still outputs the
      constant `activation(β)`, and in MobileNetV3 the depthwise BN adds its
      own β: with γ alone soft-thresholded, VGG-BN pruned at rate 0.3 fell
      from 98.3% to 45% although a fifth of its γ were 0. Shrinking all of
      a channel's γ and β as one group makes the channel's output exactly
      zero, so removal is exact.

    `l1` is a penalty strength in loss units: a channel survives while its
    averaged loss gradient exceeds it, so the right value depends on the
    model (per-channel gradients shrink as layers get wider). The default
    0.02 was measured on MobileNetV3-Small and -Large on the digits
    (`benchmarks/bn_sparsity_digits.py`: 15 and 10 epochs of Adam 1e-3,
    batch 64, `targets="expansion"`, from scratch): 80.8% and 75.7% of the
    expansion channels below 1e-2, pruning with `bn_gamma` or
    `sparsity_gamma` at rates 0.3, 0.5 and 0.7 leaves the accuracy unchanged
    before fine-tuning, and the sparsity-trained accuracy is 97.5% vs 96.7%
    plain (Small) and 94.7% vs 95.8% (Large); 0.05 left MobileNetV3-Large at
    86.1%. A narrow CNN (the VGG-BN of the benchmark, 32-64 channels per
    layer) needs about 0.1 (55% zero, 99.2% vs 99.7%); at 0.05 only 30% of
    its γ reached zero in 20 epochs.
    Watch the logged `bn_gamma_below_0.01` and the accuracy: lower `l1` if
    more channels die than you mean to prune, raise it if fewer; or give a
    `target` instead.

    **Target form (`target=`, issue 30)**: say which share of the targeted
    channels should end at zero (the `rate` you will prune at with
    `bn_gamma` or `sparsity_gamma` and the same `targets`) and the callback
    finds the strength itself; `l1` is then only where it starts. Three
    differences from the fixed strength:

    - Only the channels ranked in the bottom `target` share (by the norm of
      their penalised BN parameters, re-ranked at every step) are
      penalised. Penalising every channel at a strength high enough to zero
      the bottom half zeroed 62-66% of the VGG-BN's channels for a 0.5
      target (Adam: 94.4% accuracy against 99.7% plain; one run of an
      earlier version of this controller): in a ReLU network a zeroed
      channel gets no gradient and never comes back.
    - A feedback controller sets the strength every step. It measures `q`,
      the norm at the target share (the `ceil(target * n)`-th smallest;
      `target` of the channels are below `target_threshold` exactly when `q`
      is), and moves it along a path that falls linearly from its value when
      the penalty starts to `target_threshold / 2` over `ramp_epochs`, then
      stays there (`scheduled_quantile`): the strength is multiplied by
      `exp(gain * e * Δt)` with `e = clip(log2(q / path), -1, 1)` and `Δt`
      the epochs since the last step (`tracking_error`, `adapt_strength`);
      once `q` is exactly zero the strength is held. Unlike the share, `q`
      moves as soon as the strength does, long before a channel crosses the
      threshold, so the controller does not wind up while it waits. The
      strength stays within `[l1 * 1e-4, l1 * 1e4]`.
    - The strength is in loss-gradient units under every optimizer (the
      proximal step uses the optimizer's own step, see above): a channel at
      zero stays there while its loss gradient is below the strength, under
      SGD as under Adam. So the controller needs no rescaling for the
      learning rate or the optimizer; the path is relative to the scales'
      own starting value, so it needs none for the scale of γ either.

    Measured (`benchmarks/bn_sparsity_target.py`, the "BN-γ sparsity
    training to a target" sections of RESULTS.md): with `target=0.5` and no
    strength, the VGG-BN, a ResNet-style CNN and MobileNetV3-Small
    (`targets="expansion"`) end with half of their targeted channels at
    zero under Adam and under SGD, and pruning half of them with
    `bn_gamma` costs nothing before fine-tuning (the sparsity-trained
    accuracy is from 0.6 points above to 1.4 below plain training's; one
    run each); the fixed default left 9.9% of
    the VGG-BN's γ below 1e-2 (10.0% accuracy once pruned at 0.5). On
    10,000 Fashion-MNIST training images (VGG-BN, Adam, 10 epochs): 50% at
    zero, nothing lost by pruning at 0.5, 81.7% against 85.1% plain (the
    fixed default: 26.6% below 1e-2, 18.5% once pruned). With very few
    epochs the ramp is short and the strength may not rise fast enough
    (2 epochs of the VGG-BN: 13.5% of a 0.5 target); raise `gain` or train
    longer.
    The logs get `bn_channel_share` (the share of the penalised groups with
    a norm below `target_threshold`: channels with `penalty="channel"`),
    `bn_gamma_quantile` (`q`) and `bn_gamma_quantile_goal` (the path at the
    end of the epoch) besides `bn_gamma_l1`, the strength in use.
    In a network whose additions tie the channels of several
    BatchNormalizations (a ResNet stage), one channel holds several γ, so
    `bn_gamma_below_0.01` (a share of γ) is lower than the share of channels.

    Whatever the strength, no channel group (with `penalty="gamma"`: no
    BatchNormalization layer) is emptied: if a step would zero all of its
    channels, the largest one skips that step, because a layer without
    channels cuts the network.

    Other choices:

    - `penalty="gamma"`: an L1 penalty on γ only, as in Network Slimming
      (with `mode="proximal"`: soft threshold `sign(γ) max(|γ| - l1 η, 0)`).
    - `mode="subgradient"` (the Network Slimming reference, `penalty="gamma"`
      only): while `fit` runs every targeted γ carries an extra regularizer
      `l1 * Σ|γ|`, so its gradient `l1 * sign(γ)` is added to the loss
      gradient and goes through the optimizer. The regularizer is removed at
      `on_train_end` (the model's config is unchanged). Under
      `tf.distribute` the penalty is scaled like any Keras loss. This was
      the default before issue 15: `BNSparsity(1e-4, mode="subgradient",
      penalty="gamma")`.

    Distributed training: the proximal step runs between training steps on
    every worker, on the same replicated γ and β with the same strength, so
    the workers stay identical (`tests/test_multi_worker.py`, with
    `BatchNormalization(synchronized=True)` so that the moving statistics
    agree too; without it each worker keeps its own, as in plain Keras).

    The strength of epoch `e` is `0` while `e < warmup_epochs`, then
    `schedule(e, l1)` if a schedule is given, else `l1`. With
    `steps_per_execution > 1` the proximal step runs once per execution with
    the step scaled by the number of steps. At the end of each epoch the logs
    get `bn_gamma_l1` (the strength used), `bn_gamma_mean_abs` and
    `bn_gamma_below_<t>` (the share of the targeted γ with `|γ| < t`) for
    each threshold; with `log_dir`, a histogram of the targeted |γ| and those
    shares are written for TensorBoard under `log_dir/bn_sparsity`.

    Args:
        l1: Float. Penalty strength λ. Defaults to `0.02`.
        mode: String. `"proximal"` or `"subgradient"`. Defaults to `"proximal"`.
        penalty: String. `"channel"` (group norm of a channel's BN γ and β)
            or `"gamma"` (L1 on γ). Defaults to `"channel"`.
        targets: `"all"`, `"expansion"` or a callable `ChannelGroup -> bool`:
            the channel groups penalised, as in `tfprune.prune(targets=...)`.
            Use the value you will prune with. Defaults to `"all"`.
        warmup_epochs: Int. Epochs trained without the penalty first. Defaults to `0`.
        schedule: Optional callable `(epoch, l1) -> float` giving the strength
            of each epoch after the warm-up. Defaults to `None` (constant `l1`).
        log_dir: Optional string. TensorBoard directory for γ histograms.
        thresholds: Tuple of floats. Thresholds of the logged shares.
            Defaults to `(1e-3, 1e-2, 1e-1)`.
        target: Optional float in `(0, 1)`: the share of the targeted
            channels (of the targeted γ with `penalty="gamma"`) to bring below
            `target_threshold`, e.g. the rate you will prune at. With it `l1`
            is the starting strength. Defaults to `None` (the fixed strength `l1`).
        target_threshold: Positive float. What "zero" means for `target`.
            Defaults to `1e-2`.
        ramp_epochs: Optional positive float. Epochs after the warm-up over
            which the target is approached. Defaults to `None`: two thirds
            of the epochs of the `fit` call after the warm-up (at least 1).
        gain: Positive float. The most the controller changes the log of the
            strength per epoch. Defaults to `2.0`.

    Raises:
        ValueError: If an argument is out of range, `mode="subgradient"` is
            combined with `penalty="channel"`, `target` with
            `mode="subgradient"`, a `schedule` or `l1=0`, or at
            `on_train_begin` if the model has no targeted BatchNormalization
            with a trainable scale.
        TypeError: If `schedule` is not callable.

    Example:

    >>> import keras, numpy as np, tfprune
    >>> inputs = keras.Input((4,))
    >>> x = keras.layers.BatchNormalization()(keras.layers.Dense(8)(inputs))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.ReLU()(x)))
    >>> model.compile("adam", "mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 2)), verbose=0,
    ...                     callbacks=[tfprune.callbacks.BNSparsity()])
    >>> "bn_gamma_below_0.01" in history.history
    True
    >>> # the target form: half of the channels at zero, strength found during training
    >>> targeted = tfprune.callbacks.BNSparsity(target=0.5)
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 2)), epochs=2, verbose=0, callbacks=[targeted])
    >>> sorted(key for key in history.history if key.startswith("bn_"))[:3]
    ['bn_channel_share', 'bn_gamma_below_0.001', 'bn_gamma_below_0.01']
    """

    def __init__(
        self,
        l1=0.02,
        mode="proximal",
        penalty="channel",
        targets="all",
        warmup_epochs=0,
        schedule=None,
        log_dir=None,
        thresholds=(1e-3, 1e-2, 1e-1),
        target=None,
        target_threshold=1e-2,
        ramp_epochs=None,
        gain=2.0,
    ):
        super().__init__()
        check_arguments(
            l1, mode, penalty, targets, warmup_epochs, schedule, thresholds, target, target_threshold, ramp_epochs, gain
        )
        self.l1 = float(l1)
        self.mode = mode
        self.penalty = penalty
        self.targets = targets
        self.warmup_epochs = warmup_epochs
        self.schedule = schedule
        self.log_dir = log_dir
        self.thresholds = tuple(float(t) for t in thresholds)
        self.target = None if target is None else float(target)
        self.target_threshold = float(target_threshold)
        self.ramp_epochs = ramp_epochs
        self.gain = float(gain)
        self._controlled = self.l1  # the target form's current strength
        self._ramp = 1.0
        self._epoch = 0
        self._start_quantile = None
        self._quantile = None
        self._strength = None
        self._variables = []
        self._group_ids = None
        self._group_count = 0
        self._gammas = []
        self._original_regularizers = []
        self._writer = None
        self._first_step = 0

    def get_config(self):
        """Returns the constructor arguments, so that `BNSparsity(**config)` rebuilds the callback.

        Returns:
            Dict.

        Example:

        >>> import tfprune
        >>> tfprune.callbacks.BNSparsity(0.1).get_config()["l1"]
        0.1
        """
        return {
            "l1": self.l1,
            "mode": self.mode,
            "penalty": self.penalty,
            "targets": self.targets,
            "warmup_epochs": self.warmup_epochs,
            "schedule": self.schedule,
            "log_dir": self.log_dir,
            "thresholds": self.thresholds,
            "target": self.target,
            "target_threshold": self.target_threshold,
            "ramp_epochs": self.ramp_epochs,
            "gain": self.gain,
        }

    def strength(self, epoch):
        """Returns the penalty strength used during `epoch` (0-based).

        Args:
            epoch: Int. The epoch index.

        Returns:
            Float. `0` during the warm-up, then `schedule(epoch, l1)` or `l1`;
            with `target`, the controller's current strength.

        Example:

        >>> import tfprune
        >>> tfprune.callbacks.BNSparsity(1e-4, warmup_epochs=2).strength(1)
        0.0
        """
        if epoch < self.warmup_epochs:
            return 0.0
        if self.target is not None:
            return self._controlled
        if self.schedule is not None:
            return float(self.schedule(epoch, self.l1))
        return self.l1

    def on_train_begin(self, logs=None):
        variables, ids, count, units = channel_coordinates(self.model, self.targets, self.penalty)
        self._gammas = [variable for variable in variables if variable.path.endswith("gamma")]
        if not self._gammas:
            raise ValueError(
                f"BNSparsity found no targeted BatchNormalization with a trainable scale in model "
                f"'{self.model.name}' (targets={self.targets!r}); add BatchNormalization(scale=True) "
                "layers after the pruned layers or drop the callback."
            )
        self._variables = variables
        self._sizes = [int(variable.shape[0]) for variable in variables]
        self._group_ids_numpy = np.concatenate(ids).astype("int32")
        self._group_ids = ops.convert_to_tensor(self._group_ids_numpy)
        self._group_count = count
        self._group_units = units
        self._controlled = self.l1
        self._start_quantile = None
        self._quantile = None
        epochs = (self.params or {}).get("epochs") or 1
        self._ramp = float(self.ramp_epochs or max(2.0 * (epochs - self.warmup_epochs) / 3.0, 1.0))
        self._steps_seen = 0
        self._last_epoch_steps = None
        self._strength = keras.Variable(0.0, trainable=False, dtype="float32", name="bn_l1")
        self._update = self._proximal_update
        if keras.backend.backend() == "tensorflow":
            tf = require_tensorflow("tf.function on the TensorFlow backend")

            # One traced call per batch instead of a few hundred eager ops (1.2 s per step
            # on MobileNetV3-Small on a loaded 2-core machine when eager).
            self._update = tf.function(self._proximal_update)
        if self.mode == "subgradient":
            self._original_regularizers = [gamma.regularizer for gamma in self._gammas]
            for gamma, original in zip(self._gammas, self._original_regularizers):
                gamma.regularizer = _ScheduledL1(self._strength, original)
            # The train function traced before this point does not know the new penalty.
            self.model.make_train_function(force=True)
        if self.log_dir is not None:
            tf = require_tensorflow("Writing TensorBoard summaries (log_dir=...)")

            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "bn_sparsity"))

    def scheduled_quantile(self, time):
        """Returns where the target form wants the `target`-quantile of the targeted |γ| at `time`.

        The path falls linearly from `q0`, that quantile when the penalty
        starts (after the warm-up), to half of `target_threshold` after
        `ramp_epochs`, and stays there. Following it, the scales below the
        target quantile shrink and reach zero a few at a time, the smallest
        first, while the network adapts, and at the end of the ramp the
        `target` share is below the threshold.

        Args:
            time: Float. Epochs of training done, e.g. `2.5` in the middle of the third epoch.

        Returns:
            Float: `final + (q0 - final) * (1 - p)` with `final = target_threshold / 2` and
            `p = (time - warmup_epochs) / ramp` clipped to `[0, 1]`.

        Raises:
            ValueError: Without a `target`.

        Example:

        >>> import tfprune
        >>> callback = tfprune.callbacks.BNSparsity(target=0.5, ramp_epochs=2, warmup_epochs=1)
        >>> callback.scheduled_quantile(2.0)  # halfway: (1.0 + 0.005) / 2 when q0 is 1
        0.5025
        """
        if self.target is None:
            raise ValueError("`scheduled_quantile` needs a `target`: pass BNSparsity(target=...).")
        ramp = self.ramp_epochs if self.ramp_epochs is not None else self._ramp
        progress = min(max((time - self.warmup_epochs) / ramp, 0.0), 1.0)
        final = 0.5 * self.target_threshold
        start = self._start_quantile if self._start_quantile is not None else 1.0
        return final + (max(start, final) - final) * (1.0 - progress)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._steps_seen:
            self._last_epoch_steps = self._steps_seen
        self._steps_seen = 0
        strength = self.strength(epoch)
        changed = strength != float(ops.convert_to_numpy(self._strength))
        self._strength.assign(strength)
        if changed and self.mode == "subgradient" and keras.backend.backend() == "jax":
            # JAX compiles the penalty's strength into the train step as a constant
            # (it is not one of the model's variables): compile it again.
            self.model.make_train_function(force=True)

    def on_train_batch_begin(self, batch, logs=None):
        self._first_step = batch

    def on_train_batch_end(self, batch, logs=None):
        if self.mode != "proximal":
            return
        strength = float(ops.convert_to_numpy(self._strength))
        if strength <= 0:
            return
        # With steps_per_execution > 1 this runs once for several optimizer steps.
        executed = batch - self._first_step + 1
        cutoff = np.inf
        if self.target is not None:
            self.model  # noqa: B018 - on JAX, reading `model` puts the training state back in the variables
            # Only the groups ranked in the bottom `target` share are penalised: shrinking the
            # others too zeroed 62-66% of a ReLU VGG-BN for a 0.5 target (zeroed ReLU channels
            # get no gradient and never come back).
            cutoff = share_quantile(self._group_norms(), self.target)
        self._update(
            ops.convert_to_tensor(strength, "float32"),
            ops.convert_to_tensor(float(executed), "float32"),
            ops.convert_to_tensor(cutoff, "float32"),
        )
        if self.target is not None:
            self._steps_seen = batch + 1
            steps = (self.params or {}).get("steps") or self._last_epoch_steps or 100
            done = self._epoch + (batch + 1) / steps
            self._quantile = share_quantile(self._group_norms(), self.target)
            if self._start_quantile is None:
                self._start_quantile = self._quantile
            error = tracking_error(self._quantile, self.scheduled_quantile(done))
            # bounded so that an unreachable target cannot run the strength away
            self._controlled = float(
                np.clip(adapt_strength(self._controlled, error, self.gain, executed / steps),
                        self.l1 * 1e-4, self.l1 * 1e4)
            )
            self._strength.assign(self._controlled)

    def _group_norms(self):
        """The norm of each penalised group (γ and β of a channel, or one γ), from the variables' values."""
        values = np.concatenate([np.ravel(ops.convert_to_numpy(v.value)).astype("float64") for v in self._variables])
        squares = np.bincount(self._group_ids_numpy, np.square(values), minlength=self._group_count + 1)
        counts = np.bincount(self._group_ids_numpy, minlength=self._group_count + 1)
        real = counts[: self._group_count] > 0
        return np.sqrt(squares[: self._group_count][real])

    def _proximal_update(self, strength, executed, cutoff):
        optimizer = self.model.optimizer
        values = ops.concatenate([ops.cast(ops.reshape(v.value, (-1,)), "float32") for v in self._variables])
        steps = ops.concatenate(
            [ops.broadcast_to(effective_step(optimizer, v), (size,)) for v, size in zip(self._variables, self._sizes)]
        )
        new = group_soft_threshold(
            values, steps * executed, self._group_ids, self._group_count, strength, self._group_units, cutoff
        )
        start = 0
        for variable, size in zip(self._variables, self._sizes):
            variable.assign(ops.cast(new[start : start + size], variable.dtype))
            start += size

    def gamma_statistics(self):
        """Returns the current |γ| statistics of the targeted scales that are logged each epoch.

        Returns:
            Dict with `bn_gamma_mean_abs` and `bn_gamma_below_<t>` for each threshold.

        Raises:
            ValueError: If called before training started (no targeted scales yet).

        Example:

        >>> # after model.fit(..., callbacks=[callback]):
        >>> # callback.gamma_statistics()["bn_gamma_below_0.01"]
        """
        if not self._gammas:
            raise ValueError("`gamma_statistics` needs the targeted scales: call it after `model.fit` started.")
        magnitudes = self._all_magnitudes()
        statistics = {"bn_gamma_mean_abs": float(magnitudes.mean())}
        for threshold in self.thresholds:
            statistics[f"bn_gamma_below_{threshold:g}"] = float(np.mean(magnitudes < threshold))
        return statistics

    def _all_magnitudes(self):
        return np.concatenate([np.abs(keras.ops.convert_to_numpy(g.value)) for g in self._gammas])

    def on_epoch_end(self, epoch, logs=None):
        statistics = self.gamma_statistics()
        statistics["bn_gamma_l1"] = float(ops.convert_to_numpy(self._strength))
        if self.target is not None and self._quantile is not None:
            statistics["bn_channel_share"] = float(np.mean(self._group_norms() < self.target_threshold))
            statistics["bn_gamma_quantile"] = self._quantile
            statistics["bn_gamma_quantile_goal"] = self.scheduled_quantile(epoch + 1)
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
