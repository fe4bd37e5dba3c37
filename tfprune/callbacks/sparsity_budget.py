"""`SparsityBudget`: STR training that lands on a chosen global sparsity."""

import keras
import numpy as np

from tfprune.sparsity import str_layers


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
    per_layer = _layer_ratios(layers)
    if len({weights_per_score for _, weights_per_score in per_layer}) == 1:
        # Every ratio stands for as many weights (unstructured layers): the cut
        # is round(target * n), and a partial sort (O(n)) finds its neighbours.
        ratios = np.concatenate([layer_ratios for layer_ratios, _ in per_layer])
        cut = int(round(target * ratios.size))
        neighbours = [index for index in (cut - 1, cut) if 0 <= index < ratios.size]
        ratios = np.partition(ratios, neighbours)
    else:
        ratios, weights = threshold_ratios(layers)
        order = np.argsort(ratios)
        ratios = ratios[order]
        # sparsity_if_cut[k]: sparsity when the k smallest ratios are zero.
        sparsity_if_cut = np.concatenate([[0.0], np.cumsum(weights[order]) / weights.sum()])
        cut = int(np.argmin(np.abs(sparsity_if_cut - target)))
    if cut == 0:
        return float(ratios[0] / 2.0)
    if cut == ratios.size or not np.isfinite(ratios[cut]):
        return float(ratios[cut - 1] * 2.0)
    # Geometric midpoint: ratios[cut - 1] <= c < ratios[cut] with margin on both sides.
    return float(np.sqrt(ratios[cut - 1] * ratios[cut]))


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

    Because the measurement is exact (counted from the weights, not
    estimated), the common factor needs no feedback gains to tune; it is a
    proportional step with gain 1 in log-threshold space, and the optimizer's
    updates of `s` between two steps are the disturbance it corrects.

    Global sparsity counts the kernels of all STR layers (see
    `tfprune.sparsity_report`); layers left dense (`skip`) do not count. At the
    end of each epoch the logs get `sparsity` (global) and `threshold_scale`
    (the last common factor applied).

    Args:
        target: Float in `(0, 1)`. The global sparsity to reach, e.g. `0.9`.
        ramp_epochs: Positive float or None. Epochs over which the level rises
            from 0 to `target`. Defaults to `None`: two thirds of the epochs
            of the `fit` call.
        update_every: Positive int. Batches between two rescalings. Each one
            reads every STR kernel and runs a partial sort over all weights:
            about 1 ms for the digits CNN of the tests, about 65 ms for
            MobileNetV3-Small (1.5 M weights) on a 2-core machine, where a
            training step takes about 110 ms, so raise it for large models
            (e.g. 10-50). Defaults to `1`.

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

    def __init__(self, target, ramp_epochs=None, update_every=1):
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
        self.target = float(target)
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

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.update_every:
            return
        steps = (self.params or {}).get("steps")
        fraction = (batch + 1) / steps if steps else 1.0
        self._rescale(self.scheduled_sparsity(self._epoch + fraction))

    def _rescale(self, level):
        self._last_scale = common_threshold_scale(self._layers, level)
        for layer in self._layers:
            layer.scale_thresholds(self._last_scale)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["sparsity"] = global_sparsity(self._layers)
            logs["threshold_scale"] = self._last_scale

    def on_train_end(self, logs=None):
        self._rescale(self.target)
