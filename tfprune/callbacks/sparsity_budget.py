"""`SparsityBudget`: STR training that lands on a chosen global sparsity."""

import keras
import numpy as np

from tfprune._keras import layers as keras_layers
from tfprune.sparsity import str_layers

__all__ = ["SparsityBudget", "common_threshold_scale", "global_sparsity"]

STARTS = ("equal", "uniform")


def threshold_ratios(layers):
    """Returns every STR score divided by its threshold, with the weights it stands for.

    A weight (or filter, or rank) is zero exactly when its ratio is at most 1;
    after multiplying every threshold by a common factor `c`, exactly the
    ratios `<= c` are zero. This turns "which common factor gives sparsity
    p" into a weighted quantile.

    Args:
        layers: List of STR layers (with `pruning_scores()`).

    Returns:
        Tuple of two 1-D NumPy arrays `(ratios, weights)`.

    Example:

    >>> import tfprune
    >>> from tfprune.callbacks.sparsity_budget import threshold_ratios
    >>> layer = tfprune.layers.STRDense(2, threshold_fn="exp", s_init=0.0)
    >>> layer.build((None, 2))
    >>> ratios, weights = threshold_ratios([layer])
    >>> ratios.shape, weights.tolist()
    ((4,), [1, 1, 1, 1])
    """
    per_layer = _layer_ratios(layers)
    ratios = np.concatenate([layer_ratios for layer_ratios, _ in per_layer])
    weights = np.repeat(
        [weights_per_score for _, weights_per_score in per_layer],
        [layer_ratios.size for layer_ratios, _ in per_layer],
    )
    return ratios, weights


def _layer_ratios(layers):
    per_layer = []
    for layer in layers:
        scores, thresholds, weights_per_score = layer.pruning_scores()
        with np.errstate(divide="ignore"):  # a zero threshold gives ratio inf: never pruned
            per_layer.append(((scores / thresholds).ravel(), weights_per_score))
    return per_layer


def global_sparsity(layers):
    """Returns the share of zero effective weights over all given STR layers.

    Args:
        layers: List of STR layers.

    Returns:
        Float in `[0, 1]`.

    Example:

    >>> import tfprune
    >>> from tfprune.callbacks.sparsity_budget import global_sparsity
    >>> layer = tfprune.layers.STRDense(2, s_init=-2.0)  # g = 0.119
    >>> layer.build((None, 2))
    >>> _ = layer._kernel.assign([[0.1, 0.2], [-0.05, 0.5]])
    >>> global_sparsity([layer])  # 0.1 and -0.05 are below the threshold
    0.5
    """
    per_layer = _layer_ratios(layers)
    zero = sum(np.count_nonzero(ratios <= 1.0) * weights_per_score for ratios, weights_per_score in per_layer)
    total = sum(ratios.size * weights_per_score for ratios, weights_per_score in per_layer)
    return float(zero / total)


def common_threshold_scale(layers, target):
    """Returns the factor `c` for all thresholds that makes the global sparsity closest to `target`.

    Args:
        layers: List of STR layers.
        target: Float in `[0, 1)`. The wanted global sparsity.

    Returns:
        Positive float `c`: after `layer.scale_thresholds(c)` for every layer,
        the global sparsity is the achievable value nearest to `target`
        (ties between equal magnitudes aside).

    Example:

    >>> import tfprune
    >>> from tfprune.callbacks.sparsity_budget import common_threshold_scale, global_sparsity
    >>> layer = tfprune.layers.STRDense(10, s_init=-3.0)
    >>> layer.build((None, 10))
    >>> layer.scale_thresholds(common_threshold_scale([layer], 0.5))
    >>> global_sparsity([layer])
    0.5
    """
    return _common_scale(_layer_ratios(layers), target)


def _common_scale(per_layer, target):
    """`common_threshold_scale` from the layers' `(ratios, weights_per_score)` pairs, read once."""
    if len({weights_per_score for _, weights_per_score in per_layer}) == 1:
        # Every ratio stands for as many weights (unstructured layers): the cut
        # is round(target * n), and a partial sort (O(n)) finds its neighbours.
        ratios = np.concatenate([layer_ratios for layer_ratios, _ in per_layer])
        cut = int(round(target * ratios.size))
        neighbours = [index for index in (cut - 1, cut) if 0 <= index < ratios.size]
        ratios = np.partition(ratios, neighbours)
    else:
        ratios = np.concatenate([layer_ratios for layer_ratios, _ in per_layer])
        weights = np.repeat([weight for _, weight in per_layer], [layer_ratios.size for layer_ratios, _ in per_layer])
        order = np.argsort(ratios)
        ratios = ratios[order]
        # sparsity_if_cut[k]: sparsity when the k smallest ratios are zero.
        sparsity_if_cut = np.concatenate([[0.0], np.cumsum(weights[order]) / weights.sum()])
        cut = int(np.argmin(np.abs(sparsity_if_cut - target)))
    # ratios[cut - 1] <= c < ratios[cut] (the partition put both in place).
    return _between(ratios, cut)


def weight_scales(layers):
    """Returns each STR layer's weight scale: the root mean square of its scores (|W|, filter norms or ranks).

    Args:
        layers: List of STR layers (with `pruning_scores()`).

    Returns:
        List of positive floats (a layer of zeros gets the smallest positive float).

    Example:

    >>> import numpy as np, tfprune
    >>> from tfprune.callbacks.sparsity_budget import weight_scales
    >>> layer = tfprune.layers.STRDense(2)
    >>> layer.build((None, 2))
    >>> _ = layer._kernel.assign([[3.0, -3.0], [3.0, 3.0]])
    >>> weight_scales([layer])
    [3.0]
    """
    scales = []
    for layer in layers:
        scores = layer.pruning_scores()[0]
        scales.append(max(float(np.sqrt(np.mean(np.square(scores, dtype="float64")))), np.finfo("float64").tiny))
    return scales


def layer_threshold_scales(layers, target, min_layer_density=0.0):
    """Returns one threshold factor per layer: the global sparsity is `target`, no layer below its floor.

    Without a floor this is `common_threshold_scale` for every layer. With a
    floor, a layer whose share of zeros at the common factor would exceed
    `1 - min_layer_density` gets its own, smaller factor that leaves exactly
    that share non-zero (and at least one score), and the common factor of the
    other layers rises until the global sparsity is `target` again
    (water-filling; ties between equal ratios aside).

    Args:
        layers: List of STR layers (with `pruning_scores()`).
        target: Float in `[0, 1)`. The wanted global sparsity.
        min_layer_density: Float in `[0, 1 - target)`. The share of each
            layer's weights (filters in `"channel"` mode) that stays non-zero;
            a floored layer also keeps at least as many weights as it has
            output channels (one filter in `"channel"` mode). `0.0` sets no
            floor: a layer may be emptied. Defaults to `0.0`.

    Returns:
        List of positive floats, one per layer, for `layer.scale_thresholds`.

    Example:

    >>> import numpy as np, tfprune
    >>> from tfprune.callbacks.sparsity_budget import layer_threshold_scales
    >>> small = tfprune.layers.STRDense(4, s_init=-3.0)
    >>> small.build((None, 4))
    >>> tiny = np.linspace(0.001, 0.016, 16).reshape(4, 4).astype("float32")
    >>> _ = small._kernel.assign(tiny)  # a common factor would zero this layer first
    >>> large = tfprune.layers.STRDense(16, s_init=-3.0)
    >>> large.build((None, 16))
    >>> for layer, scale in zip([small, large], layer_threshold_scales([small, large], 0.5, 0.25)):
    ...     layer.scale_thresholds(scale)
    >>> [int(np.sum(np.asarray(layer.sparse_kernel) != 0)) for layer in (small, large)]
    [4, 132]
    """
    per_layer = _layer_ratios(layers)  # every kernel read once per call
    common = _common_scale(per_layer, target)
    if min_layer_density <= 0.0:
        return [common] * len(layers)
    sorted_ratios = [np.sort(ratios) for ratios, _ in per_layer]
    # The most scores a layer may lose: all but its floor (a share, and one weight per output channel).
    caps = [
        min(int(np.floor((1.0 - min_layer_density) * ratios.size)), ratios.size - _least_kept(layer, ratios.size, weight))
        for layer, ratios, (_, weight) in zip(layers, sorted_ratios, per_layer)
    ]
    if all(np.searchsorted(ratios, common, "right") <= cap for ratios, cap in zip(sorted_ratios, caps)):
        return [common] * len(layers)  # no floor binds: one common factor, as without a floor
    weights = [weights_per_score for _, weights_per_score in per_layer]
    goal = target * sum(ratios.size * weight for ratios, weight in zip(sorted_ratios, weights))
    candidates = np.unique(np.concatenate(sorted_ratios))

    def zeros_at(index):  # zero weights when the common factor is just above candidates[index - 1]
        if index == 0:
            return 0.0
        return float(
            sum(
                min(np.searchsorted(ratios, candidates[index - 1], "right"), cap) * weight
                for ratios, cap, weight in zip(sorted_ratios, caps, weights)
            )
        )

    low, high = 0, candidates.size
    while low < high:  # the first index whose zeros reach the goal
        middle = (low + high) // 2
        if zeros_at(middle) < goal:
            low = middle + 1
        else:
            high = middle
    if low > 0 and abs(zeros_at(low - 1) - goal) <= abs(zeros_at(low) - goal):
        low -= 1
    common = _between(candidates, low)
    return [
        _between(ratios, cap) if np.searchsorted(ratios, common, "right") > cap else common
        for ratios, cap in zip(sorted_ratios, caps)
    ]


def _least_kept(layer, size, weights_per_score):
    """The fewest scores a floored layer keeps: one weight per output channel, or one filter."""
    if weights_per_score != 1:
        return 1  # "channel" mode: a score is a whole filter
    # Output channels from the kernel's filter axes (in_channels x multiplier for
    # depthwise layers), as the layer's own build() reads them: building the sparse
    # kernel to count them cost 0.4 s per rescaling on MobileNetV3-Small.
    channels = int(np.prod(keras_layers.stored_kernel(layer).shape[-layer._filter_axes :]))
    return max(1, min(size, channels))


def _between(sorted_ratios, count):
    """A factor that zeroes exactly the `count` smallest of `sorted_ratios`.

    The geometric midpoint of the ratios either side of the cut, so both are
    clear of it; only `sorted_ratios[count - 1]`, `[count]` (and `[0]`) need
    to be in sorted position.
    """
    if count == 0:
        return float(sorted_ratios[0] / 2.0)
    if count >= sorted_ratios.size or not np.isfinite(sorted_ratios[count]):
        return float(sorted_ratios[count - 1] * 2.0)
    return float(np.sqrt(sorted_ratios[count - 1] * sorted_ratios[count]))


class SparsityBudget(keras.callbacks.Callback):
    """Steers STR training so that the final global sparsity equals `target`.

    STR alone has no sparsity knob: where it ends depends on weight decay,
    `s_init` and the learning-rate schedule. This callback separates the level
    of sparsity from its distribution over layers:

    - The distribution is STR's: each layer's threshold parameter `s` is
      trained by the optimizer (loss gradient plus the layer's
      `threshold_regularizer`, the paper's decay on `s`), so layers whose
      weights matter keep lower thresholds. Per-layer budgets stay learned and
      non-uniform.
    - The level is set by the callback: every `update_every` training
      batches, it multiplies ALL thresholds `g(s)` by one common factor `c`
      (changing each `s` accordingly), which keeps the ratios between the
      layers' thresholds. `c` is found in closed form: a weight is zero iff
      `|W| <= g(s)`, so scaling thresholds by `c` zeroes exactly the weights
      with `|W| / g(s) <= c`, and the `c` for sparsity `p` is the weighted
      `p`-quantile of those ratios (`common_threshold_scale`).
    - The level follows the cubic ramp of gradual magnitude pruning (Zhu &
      Gupta, 2017): `target * (1 - (1 - t / ramp_epochs) ** 3)` at training
      time `t` in epochs, then stays at `target`, so the weights adapt while
      sparsity grows and the last epochs fine-tune at the final level.
    - At the end of training a last rescaling lands the global sparsity on
      `target` to within one weight (or one filter in `"channel"` mode).
    - No layer is emptied: a layer whose share of zeros would pass
      `1 - min_layer_density` keeps that floor instead (its own threshold
      factor), and the other layers make up the difference
      (`layer_threshold_scales`). An emptied layer cuts the network, and the
      learned thresholds do empty layers: SGD on a plain CNN drove its second
      convolution to 99.7% zeros at a 90% target; a residual CNN with
      BatchNormalization at 98% (SGD) lost one convolution entirely.
      The floor also keeps at least one weight per output channel of every
      layer (on average; a depthwise 3x3 kernel keeps a ninth): with the
      share alone, MobileNetV3-Small at 98% with SGD ended with its
      depthwise kernels at the 0.5% floor, one or two weights each, and at
      chance (10.0%); with one weight per channel it reached 61.4% (one
      seed; gradual magnitude pruning: 10.0%).

    Because the measurement is exact (counted from the weights, not
    estimated), the common factor needs no feedback gains to tune; it is a
    proportional step with gain 1 in log-threshold space, and the optimizer's
    updates of `s` between two steps are the disturbance it corrects.

    Global sparsity counts the kernels of all STR layers (see
    `tfprune.sparsity_report`); layers left dense (`skip`) do not count. At the
    end of each epoch the logs get `sparsity` (global) and `threshold_scale`
    (the last common factor applied).

    Distributed training: under `tf.distribute` strategies (mirrored on one
    machine, `MultiWorkerMirroredStrategy` across machines) every worker runs
    the callback on the same replicated variables with the same deterministic
    code (the quantile is a sort, not a sample), so all workers assign the
    same thresholds; `tests/test_multi_worker.py` checks two workers end bit
    for bit equal. On JAX with `keras.distribution.DataParallel` the
    variables are replicated on every device and rescaled once.

    Callback order: the final rescaling happens in `on_train_end`, and Keras
    runs callbacks in list order, so a callback that restores weights at the
    end of training (`EarlyStopping(restore_best_weights=True)`,
    `BackupAndRestore`) must come *before* `SparsityBudget` in the list;
    listed after it, it puts back thresholds from an earlier epoch and the
    model ends below the target (52% for a 90% target in one report). A
    `ModelCheckpoint` that should save the final sparsity goes after it.

    Args:
        target: Float in `(0, 1)`. The global sparsity to reach, e.g. `0.9`.
        ramp_epochs: Positive float or None. Epochs over which the level rises
            from 0 to `target`. Defaults to `None`: two thirds of the epochs
            of the `fit` call.
        update_every: Positive int. Batches between two rescalings. Each one
            reads every STR kernel and runs a partial sort over all weights:
            about 1 ms for the digits CNN of the tests, about 0.1 s for
            MobileNetV3-Small (1.5 M weights) on a 2-core machine, where a
            training step takes 110-160 ms, so raise it for large models
            (e.g. 10-50). Defaults to `1`.
        min_layer_density: Float in `[0, 1 - target)` or None. The share of
            each STR layer's weights (filters in `"channel"` mode) that stays
            non-zero whatever the learned thresholds say; a layer also
            keeps at least as many weights as it has output channels (one
            filter in `"channel"` mode). `None` is a quarter of the target density,
            `(1 - target) / 4` (2.5% at a 90% target, 0.5% at 98%): low enough
            to leave STR's learned budget alone where it is sane, and it only
            binds on layers the budget would otherwise (nearly) empty.
            `0.0` sets no floor, the paper's behaviour (layers may be emptied).
            Defaults to `None`.
        start: String. Where the thresholds start. `"equal"`: every threshold
            at `g(s_init)` (the paper), so the budget starts as global
            magnitude pruning: the layers with the smallest initial weights
            (the largest fan-in) lose most, the first convolution and the
            classifier least. `"uniform"`: thresholds in proportion to each
            layer's root-mean-square weight, so the first rescalings zero about
            the same share of every layer, as gradual magnitude pruning does.
            `"equal"` keeps the small first and last layers densest, which
            paid at 98% with Adam on a plain CNN (one exploratory seed: 75%
            against 30% for `"uniform"`, whose budget stayed near uniform);
            the ablation of `benchmarks/str_grid.py` measures both. Defaults to
            `"equal"`.

    Raises:
        ValueError: If an argument is out of range, or at `on_train_begin` if
            the model has no STR layer.

    Example:

    >>> import keras, numpy as np, tfprune
    >>> inputs = keras.Input((16,))
    >>> outputs = tfprune.layers.STRDense(4)(keras.layers.Dense(32)(inputs))
    >>> model = tfprune.sparsify(keras.Model(inputs, outputs))
    >>> model.compile("adam", "mse")
    >>> history = model.fit(np.ones((8, 16)), np.ones((8, 4)), epochs=2, verbose=0,
    ...                     callbacks=[tfprune.callbacks.SparsityBudget(0.75)])
    >>> round(history.history["sparsity"][-1], 2)
    0.75
    """

    def __init__(self, target, ramp_epochs=None, update_every=1, min_layer_density=None, start="equal"):
        super().__init__()
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target < 1:
            raise ValueError(
                f"SparsityBudget needs a target sparsity strictly between 0 and 1, e.g. 0.9. "
                f"Received: target={target!r}"
            )
        if ramp_epochs is not None and (
            isinstance(ramp_epochs, bool)
            or not isinstance(ramp_epochs, (int, float))
            or not ramp_epochs > 0
        ):
            raise ValueError(
                f"SparsityBudget needs a positive `ramp_epochs` (or None for two thirds of the "
                f"epochs). Received: ramp_epochs={ramp_epochs!r}"
            )
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(
                f"SparsityBudget needs a positive int `update_every`. Received: update_every={update_every!r}"
            )
        if min_layer_density is None:
            min_layer_density = (1.0 - float(target)) / 4.0
        elif (
            isinstance(min_layer_density, bool)
            or not isinstance(min_layer_density, (int, float))
            or not 0.0 <= min_layer_density < 1.0 - target
        ):
            raise ValueError(
                f"SparsityBudget needs `min_layer_density` in [0, 1 - target) = [0, {1.0 - target:g}) (or "
                f"None for (1 - target) / 4); a higher floor makes target={target!r} unreachable. "
                f"Received: min_layer_density={min_layer_density!r}"
            )
        if start not in STARTS:
            raise ValueError(f"SparsityBudget supports start in {STARTS}. Received: start={start!r}")
        self.target = float(target)
        self.min_layer_density = float(min_layer_density)
        self.start = start
        self.ramp_epochs = ramp_epochs
        self.update_every = update_every
        self._layers = []
        self._epoch = 0
        self._ramp = 1.0
        self._last_scale = 1.0

    def scheduled_sparsity(self, time):
        """Returns the sparsity level the callback holds at `time` (in epochs).

        Args:
            time: Float. Epochs of training done, e.g. `1.5` in the middle of
                the second epoch.

        Returns:
            Float: `target * (1 - (1 - min(time / ramp, 1)) ** 3)`.

        Example:

        >>> import tfprune
        >>> budget = tfprune.callbacks.SparsityBudget(0.9, ramp_epochs=2)
        >>> budget.scheduled_sparsity(1.0), budget.scheduled_sparsity(5.0)
        (0.7875, 0.9)
        """
        ramp = self.ramp_epochs if self.ramp_epochs is not None else self._ramp
        progress = min(max(time / ramp, 0.0), 1.0)
        return self.target * (1.0 - (1.0 - progress) ** 3)

    def on_train_begin(self, logs=None):
        self._layers = str_layers(self.model)
        if not self._layers:
            raise ValueError(
                f"SparsityBudget found no STR layer in model '{self.model.name}'; convert the "
                "model with `tfprune.sparsify(model)` or build it from tfprune.layers.STR* layers."
            )
        epochs = (self.params or {}).get("epochs") or 1
        self._ramp = max(2.0 * epochs / 3.0, 1.0)
        if self.start == "uniform":
            # Thresholds in proportion to each layer's weight scale: the first
            # rescalings zero about the same share of every layer.
            scales = weight_scales(self._layers)
            reference = float(np.exp(np.mean(np.log(scales))))
            for layer, scale in zip(self._layers, scales):
                layer.scale_thresholds(scale / reference)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.update_every:
            return
        steps = (self.params or {}).get("steps")
        fraction = (batch + 1) / steps if steps else 1.0
        self._rescale(self.scheduled_sparsity(self._epoch + fraction))

    def _rescale(self, level):
        self.model  # noqa: B018 - on JAX, reading `model` puts the training state back in the variables
        scales = layer_threshold_scales(self._layers, level, self.min_layer_density)
        self._last_scale = max(scales)  # the common factor (floored layers get less)
        for layer, scale in zip(self._layers, scales):
            layer.scale_thresholds(scale)

    def on_epoch_end(self, epoch, logs=None):
        self.model  # noqa: B018 - syncs the JAX training state (see _rescale)
        if logs is not None:
            logs["sparsity"] = global_sparsity(self._layers)
            logs["threshold_scale"] = self._last_scale

    def on_train_end(self, logs=None):
        self._rescale(self.target)
