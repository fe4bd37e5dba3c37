"""MACs or parameters of a model as a function of the width of its channel groups.

A width search proposes thousands of width vectors; building each model to
count it would take seconds. `CostModel` reads the model once and then gives
the cost of any width vector in microseconds, exactly (for the layers
`tfprune.analyze` counts) and differentiably (with `keras.ops` tensors).

Why it is exact: removing channels slices weights along their channel axes.
A weight of shape `(..., n_in, n_out)` whose axes keep the shares `f_in` and
`f_out` of their entries keeps `size * f_in * f_out` entries, and a
convolution or dense layer does `positions x kernel entries` MACs (the
spatial positions do not change). So every weight (parameters) or kernel
(MACs) contributes `coefficient * prod over its channel axes of (share kept
on that axis)`, and the share kept on an axis is affine in the shares `f_g =
width_g / size_g` of the groups whose channels it carries:
`(fixed entries + sum_g entries_g * f_g) / axis length`. With independent
random widths (DMCP) the same formula gives the expected cost from the
expected shares, since no weight has two axes in one group.
"""

import keras
import numpy as np

from tfprune.analysis import analyze

__all__ = ["CostModel"]

_COSTS = ("macs", "params")


class CostModel:
    """MACs or parameter count of a model as a function of group widths.

    Args:
        model: A built Sequential or functional `keras.Model`. Not modified.
        graph: Its `tfprune.graph.build(model)`.
        groups: List of group names whose width varies; every other group
            keeps its size.
        cost: String. `"macs"` (kernel multiply-accumulates per example, as
            `tfprune.analyze`) or `"params"`. Defaults to `"macs"`.

    Attributes:
        cost: String. `"macs"` or `"params"`.
        names: Tuple of the varying group names, in the order of `shares`.
        sizes: Int array of their sizes.
        total: Float. The cost of the full model.
        terms: Tuple of `(weight path, axes)`, one per weight whose cost
            varies, in the order of `axis_shares`' columns; `axes` are the
            weight's grouped axes, in the order of `axis_shares`' rows.
        term_costs: Float array. Each term's cost when complete.

    Raises:
        ValueError: If `cost` is unknown.
        KeyError: If a group name is not in the graph.

    Example:

    >>> import keras, numpy as np, tfprune
    >>> inputs = keras.Input((8, 8, 3))
    >>> hidden = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Conv2D(4, 1, name="head")(hidden))
    >>> costs = CostModel(model, tfprune.graph.build(model), ["conv"])
    >>> costs.total                       # 36 positions x (3*3*3*8 + 8*4)
    8928.0
    >>> costs.of_widths({"conv": 4}), costs(np.array([0.5]))
    (4464.0, 4464.0)
    """

    def __init__(self, model, graph, groups, cost="macs"):
        if cost not in _COSTS:
            raise ValueError(f"`cost` must be one of {_COSTS}. Received: cost={cost!r}")
        self.cost = cost
        self.names = tuple(groups)
        self.sizes = np.array([graph[name].size for name in self.names], dtype=np.int64)
        column = {name: index for index, name in enumerate(self.names)}
        # counts[weight path][axis][column] = entries of that axis owned by the group
        counts = {}
        for group in graph.groups:
            if group.name not in column:
                continue
            for member in group.members:
                for path, axis in member.weights:
                    by_column = counts.setdefault(path, {}).setdefault(axis, {})
                    by_column[column[group.name]] = by_column.get(column[group.name], 0) + len(member.positions)
        shapes = {weight.path: tuple(weight.shape) for weight in model.weights}
        coefficients, axes, terms = [], [], []
        self._constant = 0.0
        for path, coefficient in _weight_costs(model, cost):
            grouped = counts.get(path, {})
            if not grouped:
                self._constant += coefficient
                continue
            coefficients.append(coefficient)
            axes.append([(shapes[path][axis], by_column) for axis, by_column in sorted(grouped.items())])
            terms.append((path, tuple(sorted(grouped))))
        self.terms = tuple(terms)
        slots = max([len(weight_axes) for weight_axes in axes] + [1])
        # share kept on axis slot k of term t: slopes[k, t] @ shares + intercepts[k, t]
        self._slopes = np.zeros((slots, len(axes), len(self.names)))
        self._intercepts = np.ones((slots, len(axes)))
        for term, weight_axes in enumerate(axes):
            for slot, (length, by_column) in enumerate(weight_axes):
                for index, count in by_column.items():
                    self._slopes[slot, term, index] += count / length
                self._intercepts[slot, term] = 1.0 - sum(by_column.values()) / length
        self._coefficients = np.array(coefficients, dtype=np.float64)
        self.term_costs = self._coefficients
        self.total = float(self(np.ones(len(self.names))))

    def axis_shares(self, shares):
        """The share kept on each grouped axis of each term, for NumPy `shares`.

        Args:
            shares: 1-D array with one share in [0, 1] per name of `names`.

        Returns:
            Float array of shape `(max axes per term, len(terms))`; entry
            `[k, t]` is the share kept on the k-th grouped axis of term `t`
            (1 where the term has fewer axes). `cost == term_costs @
            prod(axis_shares, axis=0) + constant part`.

        Example:

        >>> costs.axis_shares(np.array([0.5]))                        # doctest: +SKIP
        array([[0.5, 0.5]])
        """
        return self._slopes @ np.asarray(shares, dtype=np.float64) + self._intercepts

    def __call__(self, shares):
        """The cost when each group keeps the given share of its channels.

        Args:
            shares: 1-D NumPy array or `keras.ops` tensor with one share in
                [0, 1] per name of `names` (`width / size`).

        Returns:
            A float for NumPy input, a scalar tensor (differentiable) otherwise.

        Example:

        >>> costs(np.ones(len(costs.names))) == costs.total           # doctest: +SKIP
        True
        """
        if isinstance(shares, (np.ndarray, list, tuple)):
            kept = np.prod(self._slopes @ np.asarray(shares, dtype=np.float64) + self._intercepts, axis=0)
            return float(kept @ self._coefficients + self._constant)
        slopes = keras.ops.convert_to_tensor(self._slopes, dtype=shares.dtype)
        intercepts = keras.ops.convert_to_tensor(self._intercepts, dtype=shares.dtype)
        coefficients = keras.ops.convert_to_tensor(self._coefficients, dtype=shares.dtype)
        kept = keras.ops.prod(keras.ops.matmul(slopes, shares) + intercepts, axis=0)
        return keras.ops.sum(kept * coefficients) + self._constant

    def of_widths(self, widths):
        """The cost of the model with some groups set to integer widths.

        Args:
            widths: Dict `{group_name: width}` over names of `names`; missing
                groups keep their size.

        Returns:
            Float. Equal to `tfprune.analyze(set_widths(model, widths))` for
            the layers `analyze` counts.

        Example:

        >>> costs.of_widths({"conv": 8})                              # doctest: +SKIP
        """
        shares = np.ones(len(self.names))
        for index, name in enumerate(self.names):
            if name in widths:
                shares[index] = widths[name] / self.sizes[index]
        return self(shares)

    def get_config(self):
        """Returns the cost function as plain Python data (for layer configs).

        Returns:
            Dict; `CostModel.from_config(config)` rebuilds an equal cost model
            without the Keras model.

        Example:

        >>> CostModel.from_config(costs.get_config()).total == costs.total  # doctest: +SKIP
        True
        """
        return {
            "cost": self.cost,
            "names": list(self.names),
            "sizes": self.sizes.tolist(),
            "slopes": self._slopes.tolist(),
            "intercepts": self._intercepts.tolist(),
            "coefficients": self._coefficients.tolist(),
            "constant": self._constant,
            "terms": [[path, list(axes)] for path, axes in self.terms],
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds a cost model from `get_config()`.

        Args:
            config: Dict returned by `get_config`.

        Returns:
            A `CostModel`.

        Example:

        >>> same = CostModel.from_config(costs.get_config())            # doctest: +SKIP
        """
        costs = cls.__new__(cls)
        costs.cost, costs.names = config["cost"], tuple(config["names"])
        costs.sizes = np.array(config["sizes"], dtype=np.int64)
        slots = max(len(config["slopes"]), 1)
        costs._slopes = np.array(config["slopes"], dtype=np.float64).reshape(slots, -1, len(costs.names))
        costs._intercepts = np.array(config["intercepts"], dtype=np.float64).reshape(slots, -1)
        costs._coefficients = np.array(config["coefficients"], dtype=np.float64)
        costs.term_costs = costs._coefficients
        costs.terms = tuple((path, tuple(axes)) for path, axes in config.get("terms", ()))
        costs._constant = float(config["constant"])
        costs.total = float(costs(np.ones(len(costs.names))))
        return costs


def _weight_costs(model, cost):
    """Yields `(weight path, cost when the weight is complete)`."""
    if cost == "params":
        for weight in model.weights:
            yield weight.path, float(np.prod(weight.shape))
        return
    for record in analyze(model).layers:
        if not record.macs:
            continue
        layer = next((layer for layer in model.layers if layer.name == record.name), None)
        # A keras.ops product of two activations (`a @ b`) has no layer: a fixed cost.
        kernels = [weight for weight in layer.weights if weight.path.endswith("kernel")] if layer else []
        if not kernels:
            yield f"{record.name}/<no kernel>", float(record.macs)
            continue
        # MACs = output positions x kernel entries, so they split by kernel size
        # (a separable conv's depthwise and pointwise kernels share the positions).
        entries = sum(float(np.prod(kernel.shape)) for kernel in kernels)
        for kernel in kernels:
            yield kernel.path, record.macs * float(np.prod(kernel.shape)) / entries


def check_share(argument, value):
    """Checks a cost share (budget, target) in (0, 1]; returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(
            f"`{argument}` is the share of the model's cost to keep and must be a number in "
            f"(0, 1], e.g. 0.5 for half the MACs. Received: {argument}={value!r}"
        )
    return float(value)


def check_reachable(costs, share, smallest_widths, argument):
    """Raises when even the smallest widths cost more than `share` of the model."""
    cost = "MACs" if costs.cost == "macs" else "parameters"
    lowest = costs.of_widths(smallest_widths) / costs.total
    if lowest > share:
        raise ValueError(
            f"`{argument}`={share} is unreachable: the searched groups at their smallest "
            f"widths still keep {lowest:.3f} of the model's {cost}. Raise `{argument}` to at "
            f"least {lowest:.3f} or search more groups (`targets`)."
        )
