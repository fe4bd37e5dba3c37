"""`tfprune.prune`: score channels, choose widths, remove the channels for real.

The three parts are kept apart like in Torch-Pruning: the channel groups come
from `tfprune.graph`, the scores from a criterion of `tfprune.criteria`, and
this module only decides how many channels each group keeps (the pruner)
before `tfprune.surgery.set_widths` rebuilds the model with the
highest-scored channels of every group.

- `scope="global"` (Network Slimming, Liu & Lei): one threshold over the
  scores of all targeted channels; the `rate` share with the lowest scores is
  removed. Scores must be comparable across groups (see `tfprune.criteria.base`).
- `scope="group"` (Li et al.): every targeted group loses `rate` of its channels.
- `threshold=t` instead of `rate`: every channel scoring `<= t` goes (e.g. the
  channels STR drove to zero, or BN scales below 1e-2).

Guards, in this order: a group keeps at least `min_channels` and at most
loses `max_group_rate` of its channels (a group that would lose every channel
is kept at its minimum and a warning names it — the MobileNetV3 source lost a
whole layer at rate 0.7), then widths are rounded to a multiple of `round_to`.
"""

import dataclasses
import math
import warnings

import keras
import numpy as np

from tfprune import criteria as criteria_module
from tfprune import graph as graph_module
from tfprune import surgery
from tfprune._utils import clone_graph, require_graph_model
from tfprune.analysis import analyze

_SCOPES = ("global", "group")

# Layers an expansion conv's output may pass through before the depthwise conv.
_EXPANSION_PASS_THROUGH = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ZeroPadding2D,
)


@dataclasses.dataclass(frozen=True)
class GroupWidth:
    """Width of one targeted channel group before and after pruning.

    Attributes:
        name: String. The group name (its first producer layer).
        before: Int. Channels before pruning.
        after: Int. Channels kept.
        guarded: Bool. True when `min_channels`/`max_group_rate` kept more
            channels than the criterion asked for.

    Example:

    >>> # result.groups[0]  ->  GroupWidth(name='expanded_conv_1_expand', before=64, after=20, guarded=False)
    """

    name: str
    before: int
    after: int
    guarded: bool = False


@dataclasses.dataclass(frozen=True)
class PruneResult:
    """What `prune` did: widths per group, params and MACs before and after.

    Attributes:
        criterion: String. The criterion's name.
        rate: Float or None. The requested rate.
        scope: String. `"global"` or `"group"`.
        threshold: Float or None. The largest removed score (global scope or
            an explicit threshold); None for group scope or when nothing was removed.
        groups: Tuple of `GroupWidth`, one per targeted group the criterion scored.
        skipped: Tuple of group names that were targeted but not scored (kept).
        params_before, params_after: Ints. Parameter counts (`tfprune.analyze`).
        macs_before, macs_after: Ints. Multiply-accumulates per example.
        reinitialized: Bool. True if the pruned model got fresh weights.

    Example:

    >>> # small, result = tfprune.prune(model, "l1", rate=0.5)
    >>> # print(result); result.params_reduction
    """

    criterion: str
    rate: object
    scope: str
    threshold: object
    groups: tuple
    skipped: tuple
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    reinitialized: bool = False

    @property
    def params_reduction(self):
        """Float. Share of the parameters removed."""
        return 1.0 - self.params_after / self.params_before

    @property
    def macs_reduction(self):
        """Float. Share of the MACs removed."""
        return 1.0 - self.macs_after / self.macs_before if self.macs_before else 0.0

    @property
    def widths_before(self):
        """Dict `{group_name: width}` before pruning."""
        return {group.name: group.before for group in self.groups}

    @property
    def widths_after(self):
        """Dict `{group_name: width}` after pruning."""
        return {group.name: group.after for group in self.groups}

    def to_dict(self):
        """Returns the result as plain Python data (JSON-serialisable).

        Returns:
            Dict.

        Example:

        >>> # json.dumps(result.to_dict())
        """
        data = dataclasses.asdict(self)
        data["groups"] = [dataclasses.asdict(group) for group in self.groups]
        data["skipped"] = list(self.skipped)
        data["params_reduction"] = self.params_reduction
        data["macs_reduction"] = self.macs_reduction
        return data

    def __str__(self):
        name_width = max([len(group.name) for group in self.groups] + [5])
        lines = [f"{'group':<{name_width}}  before  after"]
        lines += [
            f"{group.name:<{name_width}}  {group.before:>6}  {group.after:>5}"
            + ("  (guarded)" if group.guarded else "")
            for group in self.groups
        ]
        lines.append(
            f"params {self.params_before:,} -> {self.params_after:,} "
            f"(-{100 * self.params_reduction:.1f}%), MACs {self.macs_before:,} -> "
            f"{self.macs_after:,} (-{100 * self.macs_reduction:.1f}%)"
        )
        return "\n".join(lines)


def expansion_layers(model):
    """Names of the 1x1 expansion convs of the model's inverted-residual blocks.

    Recognised from the graph, not from names: a `Conv2D` with a 1x1 kernel
    (and `groups=1`) whose output reaches a `DepthwiseConv2D` through nothing
    but BatchNormalization, activation and zero-padding layers, each read by
    one layer only.

    Args:
        model: A built Sequential or functional Keras model.

    Returns:
        List of layer names.

    Example:

    >>> import tfprune
    >>> model = tfprune.models.mobilenet_v3("small")
    >>> tfprune.pruning.expansion_layers(model)[:2]
    ['expanded_conv_1_expand', 'expanded_conv_2_expand']
    """
    readers = criteria_module.base.consumers(model)
    names = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D) or layer.groups != 1:
            continue
        if tuple(layer.kernel_size) != (1, 1):
            continue
        current = layer
        while len(readers.get(current.name, ())) == 1:
            current = readers[current.name][0]
            if isinstance(current, keras.layers.DepthwiseConv2D):
                names.append(layer.name)
                break
            if not isinstance(current, _EXPANSION_PASS_THROUGH):
                break
    return names


def _targeted_groups(model, graph, targets, ignore):
    prunable = [group for group in graph.groups if group.prunable]
    if targets == "all":
        selected = prunable
    elif targets == "expansion":
        expansion = set(expansion_layers(model))
        selected = [group for group in prunable if expansion & set(group.producers)]
    else:
        selected = [group for group in prunable if targets(group)]
    ignored = set(ignore)
    return [
        group
        for group in selected
        if group.name not in ignored
        and not ignored & {member.layer_name for member in group.members}
    ]


def _check_arguments(rate, threshold, scope, targets, min_channels, max_group_rate, round_to, ignore):
    if (rate is None) == (threshold is None):
        raise ValueError(
            "Give exactly one of `rate` (share of channels to remove) and `threshold` (remove "
            f"channels scoring <= threshold). Received: rate={rate!r}, threshold={threshold!r}"
        )
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1):
        raise ValueError(f"`rate` must be a number in [0, 1), e.g. 0.5. Received: rate={rate!r}")
    if scope not in _SCOPES:
        raise ValueError(f"`scope` must be one of {_SCOPES}. Received: scope={scope!r}")
    if targets not in ("all", "expansion") and not callable(targets):
        raise ValueError(
            "`targets` must be 'all', 'expansion' or a callable `group -> bool`. "
            f"Received: targets={targets!r}"
        )
    if isinstance(min_channels, bool) or not isinstance(min_channels, int) or min_channels < 1:
        raise ValueError(f"`min_channels` must be an int >= 1. Received: min_channels={min_channels!r}")
    if max_group_rate is not None and (
        isinstance(max_group_rate, bool)
        or not isinstance(max_group_rate, (int, float))
        or not 0 < max_group_rate <= 1
    ):
        raise ValueError(
            f"`max_group_rate` must be None or in (0, 1]. Received: max_group_rate={max_group_rate!r}"
        )
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"`round_to` must be an int >= 1. Received: round_to={round_to!r}")
    if isinstance(ignore, str) or not all(isinstance(name, str) for name in ignore):
        raise TypeError(
            "`ignore` must be a tuple of group or layer names, e.g. ('conv',). "
            f"Received: ignore={ignore!r}"
        )


def _round_half_up(value):
    # Python's round() rounds halves to even (round(2.5) == 2); widths round up.
    return int(math.floor(value + 0.5))


def _removal_counts(scores, rate, threshold, scope):
    """Channels each group should lose by the criterion alone, and the global threshold."""
    if threshold is not None:
        return {name: int(np.sum(values <= threshold)) for name, values in scores.items()}, threshold
    if scope == "group":
        return {name: _round_half_up(rate * len(values)) for name, values in scores.items()}, None
    names = list(scores)
    all_scores = np.concatenate([scores[name] for name in names] + [np.zeros(0)])
    owners = np.repeat(np.arange(len(names)), [len(scores[name]) for name in names])
    count = _round_half_up(rate * len(all_scores))
    order = np.argsort(all_scores, kind="stable")[:count]
    removed = np.bincount(owners[order], minlength=len(names))
    used_threshold = float(all_scores[order[-1]]) if count else None
    return {name: int(removed[i]) for i, name in enumerate(names)}, used_threshold


def _guarded_width(name, size, remove, min_channels, max_group_rate, round_to):
    minimum = min(size, min_channels)
    if max_group_rate is not None:
        minimum = max(minimum, min(size, math.ceil(size * (1 - max_group_rate))))
    width = size - remove
    if width == 0:
        warnings.warn(
            f"Pruning would remove all {size} channels of group '{name}'; keeping {minimum} "
            "(min_channels/max_group_rate).",
            stacklevel=3,
        )
    guarded = width < minimum
    width = max(width, minimum)
    if round_to > 1 and width < size:
        width = min(size, max(round_to, _round_half_up(width / round_to) * round_to))
        width = max(width, minimum)
    return width, guarded


def _fresh_weights(model):
    # Every layer re-created from its config is built by the clone call with its
    # initializers: same architecture, new weights (the Rethinking baseline).
    return clone_graph(model, lambda layer: layer.__class__.from_config(layer.get_config()))


def prune(
    model,
    criterion,
    rate=None,
    scope="global",
    targets="all",
    min_channels=1,
    max_group_rate=None,
    round_to=1,
    ignore=(),
    reinitialize=False,
    data=None,
    seed=None,
    threshold=None,
):
    """Removes the least important channels of a model; returns a smaller model.

    Scores every channel of the targeted groups with `criterion`, chooses the
    new width of each group (global or per-group rate, or a score threshold;
    then the guards and rounding of the module docstring) and rebuilds the
    model without the removed channels: the layers' weights are sliced, not
    masked, so the result is smaller and faster. With `targets="expansion"`,
    each squeeze-excite bottleneck keeps MobileNetV3's ratio (0.25 of its new
    expansion width, rounded to a multiple of 8; METHODS.md §11).

    Args:
        model: A built Sequential or functional `keras.Model`. Not modified.
        criterion: String naming a registered criterion (`"l1"`, `"l2"`,
            `"bn_gamma"`, `"sparsity"`, `"sparsity_gamma"`, `"random"`,
            `"str_zero_filters"`, ...) or a criterion callable.
        rate: Float in [0, 1). Share of the targeted channels to remove.
        scope: String. `"global"` (one threshold across groups) or `"group"`
            (each group loses `rate`). Defaults to `"global"`.
        targets: `"all"` (every prunable group), `"expansion"` (groups of the
            1x1 expansion convs of inverted-residual blocks, see
            `expansion_layers`) or a callable `ChannelGroup -> bool`.
        min_channels: Int. A group never keeps fewer. Defaults to `1`.
        max_group_rate: Optional float in (0, 1]. A group never loses a larger share.
        round_to: Int. Pruned widths are rounded to a multiple of it (e.g. 8
            for mobile accelerators). Defaults to `1`.
        ignore: Tuple of group or layer names whose groups are left alone.
        reinitialize: Bool. If True, the pruned architecture gets fresh
            random weights (the "Rethinking" train-from-scratch baseline).
        data: Optional data passed to data-driven criteria.
        seed: Optional int passed to the criterion (`"random"`).
        threshold: Optional float. Instead of `rate`: remove every channel
            whose score is `<= threshold`.

    Returns:
        Tuple `(pruned_model, PruneResult)`.

    Raises:
        TypeError: If `model` is not a graph model or `ignore` is not a tuple of names.
        ValueError: If an argument is out of range, both or neither of
            `rate`/`threshold` are given, or the criterion is unknown.

    Example:

    >>> import tfprune
    >>> model = tfprune.models.mobilenet_v3("small", input_shape=(32, 32, 3))
    >>> small, result = tfprune.prune(model, "sparsity_gamma", rate=0.5, targets="expansion")
    >>> result.params_after < result.params_before
    True
    """
    require_graph_model(model, "tfprune.prune")
    _check_arguments(rate, threshold, scope, targets, min_channels, max_group_rate, round_to, ignore)
    score_function = criteria_module.get(criterion)
    graph = graph_module.build(model)
    targeted = _targeted_groups(model, graph, targets, ignore)
    all_scores = score_function(model, graph, data=data, seed=seed)
    scores = {
        group.name: np.asarray(all_scores[group.name], dtype="float64")
        for group in targeted
        if group.name in all_scores
    }
    removals, used_threshold = _removal_counts(scores, rate, threshold, scope)

    widths, records = {}, []
    for group in targeted:
        if group.name not in scores:
            continue
        width, guarded = _guarded_width(
            group.name, group.size, removals[group.name], min_channels, max_group_rate, round_to
        )
        records.append(GroupWidth(group.name, group.size, width, guarded))
        if width < group.size:
            widths[group.name] = width

    se_policy = "keep_ratio" if targets == "expansion" else None
    pruned = surgery.set_widths(model, widths, scores=scores, se_policy=se_policy)
    if reinitialize:
        pruned = _fresh_weights(pruned)
    before, after = analyze(model), analyze(pruned)
    result = PruneResult(
        criterion=criterion if isinstance(criterion, str) else getattr(criterion, "__name__", "custom"),
        rate=rate,
        scope=scope,
        threshold=used_threshold,
        groups=tuple(records),
        skipped=tuple(group.name for group in targeted if group.name not in scores),
        params_before=before.params,
        params_after=after.params,
        macs_before=before.macs,
        macs_after=after.macs,
        reinitialized=bool(reinitialize),
    )
    return pruned, result


@dataclasses.dataclass(frozen=True)
class SensitivityResult:
    """Per-group sensitivity scan (Li et al.): the metric after pruning one group alone.

    Attributes:
        metric: String. The metric's name.
        baseline: Float. The metric of the unpruned model.
        rates: Tuple of floats. The rates scanned.
        values: Dict `{group_name: tuple of floats}`, one value per rate.

    Example:

    >>> # result = tfprune.sensitivity(model, (x, y)); result.plot("sensitivity.png")
    """

    metric: str
    baseline: float
    rates: tuple
    values: dict

    def plot(self, path=None):
        """Returns the sensitivity figure (`tfprune.plots.sensitivity`), optionally saved as PNG.

        Args:
            path: Optional PNG path.

        Returns:
            A `matplotlib.figure.Figure`.

        Example:

        >>> # figure = result.plot()
        """
        from tfprune import plots

        return plots.sensitivity(self, path)

    def to_dict(self):
        """Returns the result as plain Python data.

        Returns:
            Dict.

        Example:

        >>> # json.dumps(result.to_dict())
        """
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "rates": list(self.rates),
            "values": {name: list(values) for name, values in self.values.items()},
        }


def _compiled_evaluator(model, data, metric):
    """`evaluate(model) -> (metric name, value)` with the compile settings of `model`."""
    compile_config = model.get_compile_config() if model.compiled else None
    if compile_config is None:
        raise ValueError(
            f"tfprune.sensitivity needs a compiled model to evaluate, but model '{model.name}' is "
            "not compiled; call model.compile(loss=..., metrics=[...]) or pass `evaluate=`."
        )
    x, y = data if isinstance(data, tuple) else (data, None)

    def evaluate(candidate):
        if candidate is not model:
            candidate.compile_from_config(compile_config)
        results = candidate.evaluate(x, y, verbose=0, return_dict=True)
        name = metric or next((key for key in results if key != "loss"), "loss")
        if name not in results:
            raise ValueError(f"`metric` {name!r} is not one of {sorted(results)}. Received: metric={metric!r}")
        return name, float(results[name])

    return evaluate


def sensitivity(
    model,
    data,
    rates=(0.25, 0.5, 0.75),
    criterion="l1",
    targets="all",
    metric=None,
    evaluate=None,
    seed=None,
    verbose=1,
):
    """Prunes each targeted group alone at each rate and evaluates (Li et al. 2017).

    The scan shows which groups tolerate pruning: flat curves can be pruned
    hard, steep ones should be kept or pruned lightly.

    Args:
        model: A built, compiled Sequential or functional `keras.Model`. Not modified.
        data: `(x, y)` arrays or a dataset of `(x, y)` batches for `evaluate`.
        rates: Tuple of floats in [0, 1). Defaults to `(0.25, 0.5, 0.75)`.
        criterion: Criterion name or callable ranking channels inside a group.
            Defaults to `"l1"` (Li et al.).
        targets: `"all"`, `"expansion"` or a callable `ChannelGroup -> bool`.
        metric: Optional string. Which metric of `model.evaluate` to report;
            defaults to the first one that is not the loss.
        evaluate: Optional callable `model -> float` used instead of
            `model.evaluate` (then the model need not be compiled).
        seed: Optional int for the `"random"` criterion.
        verbose: Int. 1 shows a progress bar. Defaults to `1`.

    Returns:
        A `SensitivityResult` (with `.plot()`).

    Raises:
        ValueError: If the model is not compiled and no `evaluate` is given,
            or a rate is out of range.

    Example:

    >>> # result = tfprune.sensitivity(model, (x_test, y_test), rates=(0.3, 0.6))
    >>> # result.values["expanded_conv_1_expand"]
    """
    require_graph_model(model, "tfprune.sensitivity")
    rates = tuple(float(rate) for rate in rates)
    for rate in rates:
        if not 0 <= rate < 1:
            raise ValueError(f"Every rate must be in [0, 1). Received: rates={rates!r}")
    if evaluate is None:
        evaluate_named = _compiled_evaluator(model, data, metric)
    else:

        def evaluate_named(candidate):
            return metric or "metric", float(evaluate(candidate))

    metric_name, baseline = evaluate_named(model)
    graph = graph_module.build(model)
    groups = _targeted_groups(model, graph, targets, ignore=())
    progress = keras.utils.Progbar(len(groups) * len(rates), verbose=verbose, unit_name="scan")
    values = {}
    for group in groups:
        scores = []
        for rate in rates:
            pruned, _ = prune(
                model,
                criterion,
                rate=rate,
                scope="group",
                targets=lambda candidate, name=group.name: candidate.name == name,
                seed=seed,
            )
            scores.append(evaluate_named(pruned)[1])
            progress.add(1)
        values[group.name] = tuple(scores)
    return SensitivityResult(metric=metric_name, baseline=baseline, rates=rates, values=values)
