"""DMCP (Guo et al., CVPR 2020): differentiable Markov channel pruning.

The channels of a group are kept in an order: channel 1 always, channel `k`
only if channel `k - 1` is, with the learnable transition probability
`t_k = sigmoid(logit_k)`. So channel `k` survives with probability
`P_k = t_2 * ... * t_k` and the expected width `E[w] = P_1 + ... + P_C` is a
differentiable function of the logits; for equal transitions `t` it is
`(1 - t**C) / (1 - t)`.

How it trains with `model.fit` (our choice): `DMCP(model, target=0.5)` builds
`dmcp.model`, a copy of the model in which the input of every layer that
reads a searched group's channels (the next conv or dense) is multiplied,
channel by channel, by `P_k` (`MarkovChannelGates`, one layer shared by all
those call sites, holding every group's logits). A channel with `P_k = 0`
then contributes exactly what a removed channel contributes. The logits carry
a weight regularizer, `ExpectedCostPenalty`, so `model.fit` minimises

    task loss + strength * (expected cost / (target * full cost) - 1) ** 2

where the expected MACs (or parameters) are the exact `CostModel` of the
model evaluated at the expected shares `E[w_g] / size_g` (independent chains:
a layer's expected MACs are its expected in-width x expected out-width x its
per-channel cost from `tfprune.analyze`). The penalty is two-sided so that
training lands on the target rather than anywhere below it.

`dmcp.prune()` reads each group's width as its expected width, rounded,
keeps the first channels of the chain (the channel order is set once at the
start, by default by decreasing L1 norm of the filters, so a trained model
keeps its strongest filters) and rebuilds the trained copy without the other
channels by `tfprune.surgery.set_widths`: the gates are gone.

The logits are stored divided by `logit_scale`: the model's optimizer (Adam
moves each variable by about its learning rate per step) then moves the
logits `logit_scale` times faster than the weights, so a few hundred steps
suffice to reach the target.
"""

import keras
import numpy as np

from tfprune._utils import clone_graph
from tfprune.search.cost import CostModel, check_reachable, check_share
from tfprune.search.gates import SiteGates, chain_ranks, gated_model, reading_sites
from tfprune.search.result import build_pruned, compile_like, make_result, prepare
from tfprune.surgery import squeeze_excite_widths

__all__ = ["DMCP", "ExpectedCostPenalty", "MarkovChannelGates", "expected_width", "keep_probabilities"]


def keep_probabilities(transition_logits):
    """Probability that each channel of a Markov chain of channels is kept.

    Args:
        transition_logits: 1-D tensor or array of `C - 1` logits: entry `i` is
            the logit of keeping channel `i + 2` given channel `i + 1` is kept.

    Returns:
        A 1-D tensor of `C` probabilities: `1`, then the cumulative products
        of `sigmoid(transition_logits)` (computed in log space).

    Example:

    >>> import numpy as np
    >>> np.round(np.asarray(keep_probabilities(np.zeros(2, "float32"))), 3).tolist()
    [1.0, 0.5, 0.25]
    """
    log_transitions = keras.ops.log_sigmoid(keras.ops.convert_to_tensor(transition_logits))
    first = keras.ops.zeros((1,), dtype=log_transitions.dtype)
    return keras.ops.exp(keras.ops.concatenate([first, keras.ops.cumsum(log_transitions)]))


def expected_width(transition_logits):
    """Expected number of kept channels of a Markov chain of channels.

    Args:
        transition_logits: 1-D tensor or array of `C - 1` transition logits.

    Returns:
        A scalar tensor: the sum of `keep_probabilities(transition_logits)`.

    Example:

    >>> float(expected_width(np.zeros(2, "float32")))
    1.75
    """
    return keras.ops.sum(keep_probabilities(transition_logits))


class _Chains:
    """Keep probabilities of many groups' chains at once, from one flat logit vector.

    The flat logits (each group's `size - 1` transitions, concatenated) are
    gathered into a zero-padded `(groups, longest - 1)` matrix, so one
    `cumsum` along the rows gives every chain (a few tensor ops instead of a
    loop over the groups in the graph).
    """

    def __init__(self, group_sizes, logit_scale):
        self.sizes = np.array(group_sizes, dtype=np.int64)
        self.logit_scale = logit_scale
        longest = int(self.sizes.max())
        starts = np.concatenate([[0], np.cumsum(self.sizes - 1)[:-1]])
        steps = np.arange(longest - 1)
        valid = steps[None, :] < (self.sizes - 1)[:, None]
        # index 0 of the gathered vector is a padding logit; logit j is at j + 1
        self.gather = np.where(valid, starts[:, None] + steps[None, :] + 1, 0)
        self.mask = np.concatenate([np.ones((len(self.sizes), 1)), valid], axis=1)
        self.flat = np.flatnonzero(self.mask.reshape(-1))

    def probabilities(self, scaled_logits):
        """`(groups, longest)` keep probabilities, 0 past each group's size."""
        logits = keras.ops.concatenate([keras.ops.zeros((1,), scaled_logits.dtype), scaled_logits])
        log_transitions = keras.ops.log_sigmoid(keras.ops.take(logits * self.logit_scale, self.gather))
        first = keras.ops.zeros((len(self.sizes), 1), dtype=scaled_logits.dtype)
        log_keep = keras.ops.concatenate([first, keras.ops.cumsum(log_transitions, axis=1)], axis=1)
        return keras.ops.exp(log_keep) * keras.ops.cast(self.mask, scaled_logits.dtype)

    def shares(self, scaled_logits):
        """Expected width / size of every group."""
        widths = keras.ops.sum(self.probabilities(scaled_logits), axis=1)
        return widths / keras.ops.cast(self.sizes, widths.dtype)


@keras.saving.register_keras_serializable(package="tfprune")
class ExpectedCostPenalty(keras.regularizers.Regularizer):
    """Penalty on the expected MACs or parameters of a DMCP model.

    `strength * (cost(E[shares]) / target_cost - 1) ** 2`, where the shares
    are the expected kept share of each group computed from the transition
    logits it regularizes, and `cost` is a `CostModel`.

    Args:
        costs: A `CostModel`, or its `get_config()` dict.
        group_sizes: List of ints: sizes of the groups whose logits are
            concatenated in the regularized weight.
        columns: List of ints, one per name of `costs.names`: which group's
            share that cost column takes (squeeze-excite bottlenecks take
            their expansion group's share).
        target: Float in (0, 1]. Share of `costs.total` aimed at.
        strength: Float. Penalty weight. Defaults to `10.0`.
        logit_scale: Float. The weight holds `logits / logit_scale`. Defaults to `1.0`.

    Example:

    >>> penalty = ExpectedCostPenalty(costs, [16, 72], [0, 1], target=0.5)  # doctest: +SKIP
    >>> float(penalty(gates.transition_logits))  # doctest: +SKIP
    """

    def __init__(self, costs, group_sizes, columns, target, strength=10.0, logit_scale=1.0):
        self.costs = costs if isinstance(costs, CostModel) else CostModel.from_config(costs)
        self.group_sizes = [int(size) for size in group_sizes]
        self.columns = [int(column) for column in columns]
        self.target = float(target)
        self.strength = float(strength)
        self.logit_scale = float(logit_scale)

    def expected_cost(self, scaled_logits):
        """The expected cost (a scalar tensor) for the flat scaled logits."""
        shares = _Chains(self.group_sizes, self.logit_scale).shares(scaled_logits)
        return self.costs(keras.ops.take(shares, self.columns))

    def __call__(self, scaled_logits):
        relative = self.expected_cost(scaled_logits) / (self.target * self.costs.total)
        return self.strength * keras.ops.square(relative - 1.0)

    def get_config(self):
        return {
            "costs": self.costs.get_config(),
            "group_sizes": self.group_sizes,
            "columns": self.columns,
            "target": self.target,
            "strength": self.strength,
            "logit_scale": self.logit_scale,
        }


@keras.saving.register_keras_serializable(package="tfprune")
class MarkovChannelGates(SiteGates):
    """Scales channels by their DMCP keep probability, at the layers that read them.

    One layer holds the transition logits of every searched group (one
    weight, `transition_logits`, the groups' `size - 1` logits concatenated,
    stored divided by `logit_scale`) and is called once per reading layer
    with `site=` naming it. A site is a list of indices into the vector
    `[1, P(group 1, chain position 1), ..., P(group 1, position C1), P(group 2, ...), ...]`,
    one per input channel of the reading layer (0 for channels of groups that
    are not searched); see `tfprune.search.gates`.

    Args:
        group_sizes: List of ints. Channels of each searched group.
        sites: Dict `{site name: list of ints}` as above.
        logit_scale: Float. Defaults to `100.0`.
        initial_keep: Float in (0, 1). Initial probability that the last
            channel of a group is kept (all transitions equal). Defaults to `0.9`.
        penalty: Optional regularizer of the logits (`ExpectedCostPenalty`).

    Call arguments:
        inputs: Tensor whose last axis has `len(sites[site])` channels.
        site: String. The site name.

    Raises:
        ValueError: If `initial_keep` is not in (0, 1).

    Example:

    >>> gates = MarkovChannelGates([4], {"dense": [1, 2, 3, 4]})
    >>> outputs = gates(np.ones((1, 4), "float32"), site="dense")
    """

    def __init__(self, group_sizes, sites, logit_scale=100.0, initial_keep=0.9, penalty=None, **kwargs):
        super().__init__(group_sizes, sites, **kwargs)
        self.logit_scale = float(logit_scale)
        if isinstance(initial_keep, bool) or not isinstance(initial_keep, (int, float)) or not 0 < initial_keep < 1:
            raise ValueError(
                f"`initial_keep` must be in (0, 1), e.g. 0.9. Received: initial_keep={initial_keep!r}"
            )
        self.initial_keep = float(initial_keep)
        self.penalty = keras.regularizers.get(penalty)

    def build(self, input_shape=None):
        initial = []
        for size in self.group_sizes:
            # equal transitions t with t ** (size - 1) = initial_keep
            transition = self.initial_keep ** (1.0 / max(size - 1, 1))
            initial += [np.log(transition / (1.0 - transition)) / self.logit_scale] * (size - 1)
        self.transition_logits = self.add_weight(
            shape=(len(initial),),
            initializer=lambda shape, dtype=None: keras.ops.convert_to_tensor(np.array(initial), dtype=dtype),
            regularizer=self.penalty,
            name="transition_logits",
        )
        self.built = True

    def values(self):
        chains = _Chains(self.group_sizes, self.logit_scale)
        probabilities = keras.ops.reshape(chains.probabilities(self.transition_logits), (-1,))
        return keras.ops.take(probabilities, chains.flat)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "logit_scale": self.logit_scale,
                "initial_keep": self.initial_keep,
                "penalty": keras.regularizers.serialize(self.penalty) if self.penalty else None,
            }
        )
        return config


class DMCP:
    """Differentiable Markov channel pruning of a model, trained with `model.fit`.

    See the module docstring for the method and the training design. Train
    `dmcp.model` (or call `dmcp.fit`, which also logs the expected cost
    share), then call `dmcp.prune()`.

    Args:
        model: A built Sequential or functional `keras.Model`; if compiled,
            `dmcp.model` is compiled the same way (else compile it yourself).
            Not modified.
        target: Float in (0, 1]. Share of the model's `cost` to keep. Defaults to `0.5`.
        cost: String. `"macs"` or `"params"`. Defaults to `"macs"`.
        targets: `"all"`, `"expansion"` or a callable `ChannelGroup -> bool`,
            as for `tfprune.prune`. Defaults to `"all"`.
        strength: Float > 0. Weight of the cost penalty. Defaults to `10.0`.
        logit_scale: Float > 0. Speed-up of the logits (module docstring).
            Defaults to `100.0`.
        initial_keep: Float in (0, 1). Initial keep probability of each
            group's last channel. Defaults to `0.9`.
        channel_order: String. `"l1"` (chains start at the largest-L1
            filters) or `"index"`. Defaults to `"l1"`.
        unknown: String. A layer or operation tfprune has no channel
            handler for: `"raise"` refuses the model, `"freeze"` leaves every
            channel around it unpruned (see `tfprune.graph.build`). Defaults
            to `"raise"`.

    Attributes:
        model: The gated training model (shares its layers with a plain copy
            of the input model that `prune()` rebuilds).
        gates: Its `MarkovChannelGates` layer.
        costs: The `CostModel` of the searched groups.

    Raises:
        TypeError: If `model` is not a graph model.
        ValueError: If `target` is out of (0, 1] or unreachable (the searched
            groups at width 1 cost more), or another argument is invalid.

    Example:

    >>> dmcp = tfprune.search.DMCP(model, target=0.5)                   # doctest: +SKIP
    >>> dmcp.fit(x, y, epochs=3, batch_size=64)  # doctest: +SKIP
    >>> result = dmcp.prune()  # doctest: +SKIP
    >>> result.macs_share  # doctest: +SKIP
    >>> result.model.fit(x, y, epochs=5)  # doctest: +SKIP
    """

    def __init__(
        self,
        model,
        target=0.5,
        cost="macs",
        targets="all",
        strength=10.0,
        logit_scale=100.0,
        initial_keep=0.9,
        channel_order="l1",
        unknown="raise",
    ):
        self.graph, self.groups, self.follows, self.costs = prepare(
            model, "tfprune.search.DMCP", targets, cost, unknown
        )
        self.unknown = unknown
        self.target = check_share("target", target)
        check_reachable(self.costs, self.target, self._with_followers({group.name: 1 for group in self.groups}), "target")
        for name, value in (("strength", strength), ("logit_scale", logit_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")
        self.original = model
        sizes = [group.size for group in self.groups]
        self._ranks = chain_ranks(model, self.graph, self.groups, channel_order)
        index = {group.name: column for column, group in enumerate(self.groups)}
        columns = [index[self.follows.get(name, name)] for name in self.costs.names]
        penalty = ExpectedCostPenalty(self.costs, sizes, columns, self.target, strength, logit_scale)
        self.gates = MarkovChannelGates(
            sizes, reading_sites(model, self.graph, self.groups, self._ranks), logit_scale, initial_keep, penalty,
            name="dmcp_gates",
        )
        self._plain = clone_graph(model)
        self.model = gated_model(self._plain, self.gates)
        compile_like(model, self.model)
        self.history = []

    def _with_followers(self, widths):
        return squeeze_excite_widths(self.graph, widths) if self.follows else widths

    def expected_widths(self):
        """Dict `{group_name: float}`: each searched group's current expected width.

        Example:

        >>> dmcp.expected_widths()["expanded_conv_1_expand"]            # doctest: +SKIP
        51.3
        """
        chains = _Chains(self.gates.group_sizes, self.gates.logit_scale)
        shares = keras.ops.convert_to_numpy(chains.shares(self.gates.transition_logits))
        return {group.name: float(share * group.size) for group, share in zip(self.groups, shares)}

    def expected_cost_share(self):
        """Float. The expected cost of the current distribution over the model's cost.

        Example:

        >>> dmcp.expected_cost_share()                                  # doctest: +SKIP
        0.503
        """
        penalty = self.gates.penalty
        return float(penalty.expected_cost(self.gates.transition_logits)) / self.costs.total

    def widths(self):
        """Dict `{group_name: int}`: expected widths rounded, at least 1.

        Squeeze-excite bottlenecks following a searched group (`targets="expansion"`)
        are added with MobileNetV3's ratio.

        Example:

        >>> dmcp.widths()["expanded_conv_1_expand"]                     # doctest: +SKIP
        51
        """
        widths = {
            name: int(min(self.graph[name].size, max(1, np.floor(width + 0.5))))
            for name, width in self.expected_widths().items()
        }
        return self._with_followers(widths)

    def fit(self, *args, **kwargs):
        """`self.model.fit(...)` that also logs `expected_cost_share` every epoch.

        Args:
            *args: Passed to `keras.Model.fit`.
            **kwargs: Passed to `keras.Model.fit` (`callbacks` are kept).

        Returns:
            The `keras.callbacks.History`.

        Example:

        >>> history = dmcp.fit(x, y, epochs=3)                          # doctest: +SKIP
        >>> history.history["expected_cost_share"]  # doctest: +SKIP
        """
        callbacks = list(kwargs.pop("callbacks", None) or []) + [_CostShareLogger(self)]
        return self.model.fit(*args, callbacks=callbacks, **kwargs)

    def prune(self):
        """Rebuilds the trained model at the learned widths, without the gates.

        Returns:
            A `SearchResult` (`method="dmcp"`): `widths`, `model` (the trained
            weights, first channels of each chain kept; fine-tune it) and
            `history["expected_<cost>_share"]` per `fit` epoch.

        Example:

        >>> result = dmcp.prune()                                       # doctest: +SKIP
        """
        # Scores for set_widths: earlier in the chain = higher.
        scores = {name: -ranks.astype(np.float64) for name, ranks in self._ranks.items()}
        widths, pruned = build_pruned(self._plain, self.graph, self.widths(), self.follows, scores, self.unknown)
        history = {f"expected_{self.costs.cost}_share": self.history}
        return make_result("dmcp", self.original, pruned, widths, history)


class _CostShareLogger(keras.callbacks.Callback):
    def __init__(self, dmcp):
        super().__init__()
        self.dmcp = dmcp

    def on_epoch_end(self, epoch, logs=None):
        share = self.dmcp.expected_cost_share()
        self.dmcp.history.append(share)
        if logs is not None:
            logs["expected_cost_share"] = share
