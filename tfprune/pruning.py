"""`tfprune.prune`: score channels, choose widths, remove the channels for real.

The three parts are kept apart like in Torch-Pruning: the channel groups come
from `tfprune.graph`, the scores from a criterion of `tfprune.criteria`, and
this module only decides how many channels each group keeps (the pruner)
before `tfprune.surgery.set_widths` rebuilds the model with the
highest-scored channels of every group.

- `scope="global"` (Network Slimming, Liu & Lei): one threshold over the
  scores of all targeted channels; the `rate` share with the lowest scores is
  removed. Scores must be comparable across groups (see `tfprune.criteria.base`);
  a global ranking that would empty a group is refused for criteria not
  registered as comparable (`tfprune.criteria.comparable_across_groups`).
- `scope="group"` (Li et al.): every targeted group loses `rate` of its channels.
- `scope=None` (the default): global for comparable criteria (BN scales),
  per group for the others (filter norms, random, data-driven scores).
- `threshold=t` instead of `rate`: every channel scoring `<= t` goes (e.g. the
  channels STR drove to zero, or BN scales below 1e-2).

A rate asks `rate * size` channels of a group; the count removed rounds down,
so a group never loses more than asked. Guards, in this order: a group keeps
at least `min_channels` and at most loses `max_group_rate` of its channels (a
group that would lose every channel, under a global ranking or a threshold,
is kept at its minimum and a warning names it — the MobileNetV3 source lost a
whole layer at rate 0.7), then widths are rounded up to a multiple of
`round_to` (8 by default, chosen by measured LiteRT latency), except the
heads of attention layers: a head is already a large unit, so head groups
are never rounded. A prune that removes less than half of what it asked from
some group says so in one warning naming the groups and the guard
responsible.

Before the pruned model is returned it is run once on a probe input made
from its input spec, rebuilt from its config, and saved to a `.keras` file
and loaded back (the outputs must not change): a pruned model that cannot run
or be reloaded is refused by name rather than handed back, as is one with
more parameters than its input (a tied weight copied twice).
"""

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import json
import math
import os
import tempfile
import warnings

import keras
import numpy as np

from tfprune import criteria as criteria_module
from tfprune import graph as graph_module
from tfprune import sparsity as sparsity_module
from tfprune import surgery
from tfprune._keras import functional
from tfprune._utils import (
    check_verbose,
    clone_graph,
    first_line,
    functional_view,
    is_integer,
    is_number,
    renamed_argument,
    require_graph_model,
)
from tfprune.analysis import analyze
from tfprune.export import inputs as input_data
from tfprune.structure import expansion_layers

__all__ = ["GroupWidth", "PruneResult", "SensitivityResult", "expansion_layers", "prune", "sensitivity"]

_SCOPES = ("global", "group")

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
        renormalized: Tuple of layer names. The LayerNormalization /
            RMSNormalization layers that lost channels (`targets="hidden"`):
            their statistics are now computed over fewer channels, so the
            pruned model computes something else even where the removed
            channels' weights were zero; fine-tune it.
        uncounted_layers: Tuple of layer names whose MACs `tfprune.analyze`
            could not count, in the model before or after pruning
            (`Analysis.uncounted_layers`): `macs_before` and `macs_after`
            leave them out and are lower bounds. Empty when `complete`.

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
    renormalized: tuple = ()
    uncounted_layers: tuple = ()

    @property
    def complete(self):
        """Bool. True when the MACs of every layer were counted, before and after pruning.

        When False, `macs_before`, `macs_after` and `macs_reduction` leave out
        the layers named in `uncounted_layers`, and `str(result)` says
        INCOMPLETE.

        Returns:
            Bool.

        Example:

        >>> import keras, tfprune
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(8, name="hidden")(inputs)))
        >>> _, result = tfprune.prune(model, "l1", rate=0.5, round_to=1)
        >>> result.complete, result.uncounted_layers
        (True, ())
        """
        return not self.uncounted_layers

    @property
    def unchanged(self):
        """Bool. True when the prune removed no channel: the model returned is a copy of the input.

        A rate too small for the targeted groups, a threshold no score is
        below, or guards (`min_channels`, `max_group_rate`, `round_to`) that
        keep every channel leave the model as it was (`tfprune.prune` warns);
        a command line can test this to fail.

        Returns:
            Bool.

        Example:

        >>> import warnings
        >>> import keras, tfprune
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(8, name="hidden")(inputs)))
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # "removed no channel": 0.1 of 8 is less than one
        ...     _, result = tfprune.prune(model, "l1", rate=0.1)
        >>> result.unchanged
        True
        >>> tfprune.prune(model, "l1", rate=0.5, round_to=1)[1].unchanged
        False
        """
        return all(group.after == group.before for group in self.groups)

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
        data["renormalized"] = list(self.renormalized)
        data["uncounted_layers"] = list(self.uncounted_layers)
        data["params_reduction"] = self.params_reduction
        data["macs_reduction"] = self.macs_reduction
        data["complete"] = self.complete
        data["unchanged"] = self.unchanged
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
        if not self.complete:
            lines.append(
                f"INCOMPLETE: the MACs leave out {len(self.uncounted_layers)} layer(s) tfprune cannot count "
                f"({_shown(self.uncounted_layers)}); register a formula with tfprune.analysis.register_macs"
            )
        if self.unchanged:
            lines.append("unchanged: no channel was removed")
        if self.renormalized:
            lines.append(
                f"normalisation statistics changed in {len(self.renormalized)} layer(s) "
                f"({_shown(self.renormalized, quote=False)}): fine-tune the pruned model"
            )
        return "\n".join(lines)


def _shown(names, limit=3, quote=True):
    """The first `limit` names, comma-separated, with ", ..." when there are more."""
    shown = [repr(name) if quote else name for name in names[:limit]]
    return ", ".join(shown) + (", ..." if len(names) > limit else "")


def _targeted_groups(model, graph, targets, ignore):
    prunable = [group for group in graph.groups if group.prunable]
    if targets == "all":
        selected = prunable
    elif targets == "expansion":
        expansion = set(expansion_layers(model))
        selected = [group for group in prunable if expansion & set(group.producers)]
    elif targets == "heads":
        selected = [group for group in prunable if group.heads_of is not None]
    elif targets == "mlp":
        selected = [group for group in prunable if group.producers and all(
            _makes_mlp_units(model.get_layer(name)) for name in group.producers)]  # fmt: skip
    elif targets == "hidden":
        selected = [group for group in prunable if group.normalized_by]
    else:
        selected = [group for group in prunable if targets(group)]
    ignored = set(ignore)
    return [
        group
        for group in selected
        if group.name not in ignored
        and not ignored & {member.layer_name for member in group.members}
    ]


_TARGETS = ("all", "expansion", "heads", "mlp", "hidden")
# Producers of MLP units: keras-hub's Gemma writes its gated MLP with EinsumDense layers.
_MLP_LAYERS = (keras.layers.Dense, keras.layers.EinsumDense)


def _makes_mlp_units(layer):
    # A layer whose handler says it holds MLP units (a mixture-of-experts block's experts).
    return isinstance(layer, _MLP_LAYERS) or getattr(graph_module.handler_for(layer), "makes_mlp_units", False)


def _check_arguments(rate, threshold, scope, targets, min_channels, max_group_rate, round_to, ignore):
    """Validates `prune`'s arguments; returns `rate` and `threshold` as Python floats (or None)."""
    if (rate is None) == (threshold is None):
        raise ValueError(
            "Give exactly one of `rate` (share of channels to remove) and `threshold` (remove "
            f"channels scoring <= threshold). Received: rate={rate!r}, threshold={threshold!r}"
        )
    if rate is not None and (not is_number(rate) or not 0 <= rate < 1):
        raise ValueError(f"`rate` must be a number in [0, 1), e.g. 0.5. Received: rate={rate!r}")
    if threshold is not None and (not is_number(threshold) or math.isnan(threshold)):
        raise ValueError(
            f"`threshold` must be a number (channels scoring <= it are removed), e.g. 0.0. "
            f"Received: threshold={threshold!r}"
        )
    if scope is not None and scope not in _SCOPES:
        raise ValueError(
            f"`scope` must be None (chosen by the criterion) or one of {_SCOPES}. Received: scope={scope!r}"
        )
    if targets not in _TARGETS and not callable(targets):
        raise ValueError(
            "`targets` must be 'all', 'expansion', 'heads', 'mlp', 'hidden' or a callable `group -> bool`. "
            f"Received: targets={targets!r}"
        )
    if not is_integer(min_channels) or min_channels < 1:
        raise ValueError(f"`min_channels` must be an int >= 1. Received: min_channels={min_channels!r}")
    if max_group_rate is not None and (not is_number(max_group_rate) or not 0 < max_group_rate <= 1):
        raise ValueError(
            f"`max_group_rate` must be None or in (0, 1]. Received: max_group_rate={max_group_rate!r}"
        )
    if not is_integer(round_to) or round_to < 1:
        raise ValueError(f"`round_to` must be an int >= 1. Received: round_to={round_to!r}")
    if isinstance(ignore, str) or not all(isinstance(name, str) for name in ignore):
        raise TypeError(
            "`skip` must be a tuple of group or layer names, e.g. ('conv',). "
            f"Received: skip={ignore!r}"
        )
    return (None if rate is None else float(rate)), (None if threshold is None else float(threshold))


def _check_ignore(model, graph, ignore):
    """Refuses `skip` names that are neither a layer nor a channel group of the model."""
    known = {layer.name for layer in model.layers} | {group.name for group in graph.groups}
    unknown = sorted(set(ignore) - known)
    if unknown:
        raise ValueError(
            f"`skip` names layers or groups that model '{model.name}' does not have, so they "
            f"would be pruned; check the names in model.summary(). Received: skip={tuple(ignore)!r} "
            f"(unknown: {unknown})"
        )


def _require_targets(model, graph, targeted, targets, ignore):
    """Refuses a call that cannot remove any channel because no group may shrink."""
    if targeted:
        return
    prunable = [group for group in graph.groups if group.prunable]
    hidden = [group for group in graph.groups if group.normalized_by and not group.prunable]
    if targets == "hidden" and hidden:  # say why the hidden width itself may not shrink
        output_names = {functional.input_name(tensor) for tensor in functional_view(model).outputs}
        why = hidden[0].reason.split(" is not prunable: ", 1)[-1].rstrip(".")
        at_output = any(name in output_names for name in hidden[0].producers) or any(
            f"model output '{name}'" in why for name in output_names
        )
        advice = (
            ", so prune the task model that puts a head on this backbone"
            if at_output
            else "; prune heads or MLP units instead (targets='heads' or 'mlp')"
        )
        raise ValueError(
            f"targets='hidden' finds no hidden width of model '{model.name}' that may be pruned: "
            f"{why}{advice}."
        )
    if prunable:
        raise ValueError(
            f"`targets` and `skip` leave none of the {len(prunable)} prunable groups of model "
            f"'{model.name}' (e.g. {prunable[0].name!r}) to prune; nothing would be removed. "
            f"Received: targets={targets!r}, skip={tuple(ignore)!r}"
        )
    reasons = [group.reason for group in graph.groups if "model input" not in group.reason]
    reasons = list(dict.fromkeys(reasons))[:2] or [group.reason for group in graph.groups][:1]
    raise ValueError(
        f"Model '{model.name}' has no channel group that may be pruned, so nothing would be "
        f"removed: {' '.join(reasons)}"
    )


def _checked_scores(all_scores, targeted, criterion_name, model):
    """The criterion's scores of the targeted groups, as float arrays; refuses bad ones."""
    scores = {}
    for group in targeted:
        if group.name not in all_scores:
            continue
        values = np.asarray(all_scores[group.name], dtype="float64")
        if values.shape != (group.size,):
            raise ValueError(
                f"Criterion '{criterion_name}' must return {group.size} scores for group "
                f"'{group.name}'. Received: shape {values.shape}"
            )
        if np.isnan(values).any():
            raise ValueError(
                f"Criterion '{criterion_name}' returned NaN scores for group '{group.name}' "
                f"(channels {np.flatnonzero(np.isnan(values)).tolist()[:5]}); NaN cannot be ranked, "
                "so check the weights or data it scores (a diverged training run leaves NaN weights)."
            )
        scores[group.name] = values
    if not scores:
        raise ValueError(
            f"Criterion '{criterion_name}' scores none of the {len(targeted)} groups targeted in "
            f"model '{model.name}' (e.g. {targeted[0].name!r}), so nothing would be removed; "
            "'bn_gamma' and 'sparsity_gamma' score only producers followed directly by a "
            "BatchNormalization, 'l1' scores every conv and dense producer."
        )
    return scores


def _floor(value):
    # Down, never up: a group never loses more than the rate asks. The tolerance
    # keeps float products whole (0.29 * 100 is 28.999999999999996).
    return int(math.floor(value + 1e-9))


def _removal_counts(scores, rate, threshold, scope):
    """What the criterion asks of each group: `(asked, counts, threshold)`.

    `asked` is the exact share the rate asks of each group (`rate * size` per
    group; the ranking's count for a global rate or a threshold), `counts` the
    whole channels to remove (rounded down), `threshold` the global cut.
    """
    if threshold is not None:
        counts = {name: int(np.sum(values <= threshold)) for name, values in scores.items()}
        return counts, counts, threshold
    if scope == "group":
        asked = {name: rate * len(values) for name, values in scores.items()}
        return asked, {name: _floor(value) for name, value in asked.items()}, None
    names = list(scores)
    all_scores = np.concatenate([scores[name] for name in names] + [np.zeros(0)])
    owners = np.repeat(np.arange(len(names)), [len(scores[name]) for name in names])
    count = _floor(rate * len(all_scores))
    order = np.argsort(all_scores, kind="stable")[:count]
    removed = np.bincount(owners[order], minlength=len(names))
    used_threshold = float(all_scores[order[-1]]) if count else None
    counts = {name: int(removed[i]) for i, name in enumerate(names)}
    return counts, counts, used_threshold


def _inlined(model):
    # A backbone called as one layer (keras.applications' ConvNeXt stem, transfer
    # learning's Sequential([backbone, head]), keras-hub's task models) and
    # composite layers (keras-hub's blocks) are inlined, as a user would do by hand.
    if graph_module.needs_flattening(model):
        return graph_module.flatten(model)
    return model


def _stripped(model):
    # STR layers and magnitude-pruning wrappers: their sparsity depends on the whole
    # kernel, so they are baked into plain layers (`tfprune.strip`) before channels go.
    if any(hasattr(layer, "stripped_layer") for layer in model.layers):
        return sparsity_module.strip(model)
    return model


def _zero_filters_threshold(criterion, rate, threshold):
    """`(rate, threshold)` for `prune`: `"str_zero_filters"` removes exactly the zero filters.

    Its scores tie at 1 for every live channel, so a rate would remove live
    filters picked by their order: it is refused, and with neither argument
    the threshold is 0 (the zero channels).
    """
    if criterion != "str_zero_filters":
        return rate, threshold
    if rate is not None:
        raise ValueError(
            "criterion='str_zero_filters' removes exactly the filters STR trained to zero, so it takes no "
            f"`rate` (received rate={rate!r}): call it without one, or choose another criterion such as 'l1' "
            "to remove a share of the channels."
        )
    return None, (0.0 if threshold is None else threshold)


def _balanced_heads(graph, records, widths):
    """Gives the query-head groups of one grouped-query attention layer one width: the largest among them.

    Every key/value head then keeps as many query heads (the layer's
    `num_query_heads` stays a multiple of `num_key_value_heads`), and no
    group loses more than asked. Returns `(records, widths)`.
    """
    sizes = {group.name: group.size for group in graph.groups}
    layer_of = {group.name: group.heads_of for group in graph.groups if group.heads_of is not None}
    largest = {}
    for record in records:
        if record.name in layer_of:
            layer = layer_of[record.name]
            largest[layer] = max(largest.get(layer, 0), record.after)
    balanced, new_widths = [], dict(widths)
    for record in records:
        layer = layer_of.get(record.name)
        if layer is not None and record.after != largest[layer]:
            record = dataclasses.replace(record, after=largest[layer], guarded=True)
            new_widths[record.name] = record.after
            if record.after == sizes[record.name]:
                del new_widths[record.name]
        balanced.append(record)
    return balanced, new_widths


def _refuse_emptied_groups(removals, scores, criterion_name, rate):
    emptied = [name for name, count in removals.items() if count and count >= len(scores[name])]
    if emptied:
        shown = ", ".join(repr(name) for name in emptied[:5]) + (", ..." if len(emptied) > 5 else "")
        raise ValueError(
            f"Ranking criterion '{criterion_name}' globally at rate={rate!r} would remove every "
            f"channel of {len(emptied)} group(s) ({shown}): its scores are not comparable across "
            "groups. Use scope='group' (its default), a lower rate, or a criterion made for a "
            "global ranking ('bn_gamma', 'sparsity_gamma')."
        )


def _guarded_width(name, size, remove, min_channels, max_group_rate, round_to):
    """`(width, guarded, causes)`: the width left after removing `remove` channels
    and applying the guards; `causes` names the guards that kept channels."""
    by_count = min(size, min_channels)
    # The tolerance keeps float products whole, so a group never loses more than max_group_rate.
    by_rate = 0 if max_group_rate is None else min(size, math.ceil(size * (1 - max_group_rate) - 1e-9))
    width = size - remove
    removes_all = width == 0
    causes = []
    if width < by_count:
        causes.append(f"min_channels={min_channels}")
    if width < by_rate:
        causes.append(f"max_group_rate={max_group_rate}")
    guarded = bool(causes)
    width = max(width, by_count, by_rate)
    if round_to > 1 and width < size:
        # Up, never down: rounding must not remove more channels than asked for.
        rounded = min(size, math.ceil(width / round_to) * round_to)
        if rounded > width:
            causes.append(f"round_to={round_to}")
        width = rounded
    if removes_all:
        # The width kept after rounding, which is what the pruned model has.
        warnings.warn(
            f"Pruning would remove all {size} channels of group '{name}'; keeping {width} "
            f"({', '.join(causes)}).",
            stacklevel=3,
        )
    return width, guarded, tuple(causes)


def _shortfall(group, asked, width, causes):
    """`("'name' (k of n channels removed: why)", causes)` when `group` lost less
    than half of the `asked` channels, else None."""
    removed = group.size - width
    if asked <= 0 or removed >= asked / 2:
        return None
    unit = "heads" if group.heads_of is not None else "channels"
    causes = causes or ("size",)
    why = ", ".join(
        f"the rate asks for less than one of its {group.size} {unit}" if cause == "size" else cause
        for cause in causes
    )
    return f"{group.name!r} ({removed} of {asked:.3g} {unit} removed: {why})", causes


_ADVICE = {
    "round_to": "a smaller round_to (1 for exact rates)",
    "min_channels": "a lower min_channels",
    "max_group_rate": "a larger max_group_rate",
    "size": "a larger rate for such small groups",
}


def _warn_shortfalls(model, shortfalls, targeted_count, rate, threshold, channels, removed_any):
    """One warning for a prune that removed nothing, or less than half of what it asked from some groups."""
    asked_by = f"rate={rate!r}" if threshold is None else f"threshold={threshold!r}"
    shown = "; ".join(text for text, _ in shortfalls[:3]) + ("; ..." if len(shortfalls) > 3 else "")
    kinds = {cause.split("=")[0] for _, causes in shortfalls for cause in causes}
    advice = "pass " + " or ".join(fix for kind, fix in _ADVICE.items() if kind in kinds)
    if not removed_any:
        if not shortfalls:  # a threshold below every score: nothing was asked
            why = f"no score of its {channels} targeted channels is <= threshold={threshold!r}"
        else:
            why = f"{asked_by} of its {channels} targeted channels removes none ({shown}; {advice})"
        message = (
            f"tfprune.prune removed no channel from model '{model.name}': {why}; the returned model "
            "is an unchanged copy."
        )
    elif shortfalls:
        message = (
            f"tfprune.prune removed less than half of what {asked_by} asks from {len(shortfalls)} of the "
            f"{targeted_count} targeted groups of model '{model.name}': {shown}; {advice} if they should shrink."
        )
    else:
        return
    warnings.warn(message, stacklevel=3)


def _criterion_arguments(score_function, verbose, model):
    """`verbose` and the compiled `loss` of the user's `model`, for a criterion that takes them.

    A keyword a `functools.partial` already fixed is left alone; `loss` is
    only passed when the model was compiled with one (the inlined copy of a
    nested model is not compiled, so the criterion could not find it).
    """
    verbose = check_verbose(verbose, "tfprune.prune")
    try:
        parameters = inspect.signature(score_function).parameters
    except (TypeError, ValueError):
        return {}
    fixed = score_function.keywords if isinstance(score_function, functools.partial) else {}
    arguments = {"verbose": verbose}
    if getattr(model, "loss", None) is not None:
        arguments["loss"] = model.loss
    return {name: value for name, value in arguments.items() if name in parameters and name not in fixed}


def _criterion_name(criterion):
    return criterion if isinstance(criterion, str) else getattr(criterion, "__name__", "custom")


def _fresh_weights(model):
    # Every layer re-created from its config is built by the clone call with its
    # initializers: same architecture, new weights (the Rethinking baseline).
    return clone_graph(model, lambda layer: layer.__class__.from_config(layer.get_config()))


# False inside `sensitivity`, which runs every pruned model through its evaluation anyway.
_CHECK_PRUNED = contextvars.ContextVar("tfprune_check_pruned", default=True)

# Unknown sizes of a probe input: the spatial axes of images (inputs of rank 4 or
# more: 32 survives the 32x downsampling of the usual backbones), and every other
# axis, such as a sequence (8 tokens).
_PROBE_SPATIAL_SIZE = 32
_PROBE_SIZE = 8


def _probe_inputs(model):
    """One example for `model` from its input spec, in the structure it is called with.

    The values are those `tfprune.export` verifies files with
    (`tfprune.export.inputs.random_batch`: floats uniform in [0, 1), token
    ids 0, masks and booleans 1), except an integer input of one value per
    example, which is 1; unknown sizes are `_PROBE_SPATIAL_SIZE` on the
    spatial axes of images and `_PROBE_SIZE` otherwise.
    """
    items = input_data.model_inputs(model)

    def known(shape):
        rank = len(shape)
        return tuple(
            size if size is not None else _PROBE_SPATIAL_SIZE if rank >= 4 and axis < rank - 1 else _PROBE_SIZE
            for axis, size in enumerate(shape)
        )

    shapes = {item.name: known(item.shape)[1:] for item in input_data._unknown_sizes(items)}
    count = next((item.shape[0] for item in items if item.shape[0] is not None), 1)
    batch = input_data.random_batch(items, count, shapes)
    for item in items:
        # One integer per example is a count rather than a token id: a diffusion
        # model's `num_steps`, whose scheduler has no noise level to take at 0 steps.
        if len(item.shape) == 1 and "int" in item.dtype:
            batch[item.name] = np.ones_like(batch[item.name])
    return input_data._call_arguments(input_data._input_structure(model), items, batch)


def _failing_operation(model, inputs):
    """The first operation of `model` whose call raises on `inputs`, or None."""
    started = []

    def operation_fn(operation):
        def call(*args, **kwargs):
            started.append(operation)
            return operation(*args, **kwargs)

        return call

    try:
        # Keras's own graph runner (what `Functional.call` uses), with each call recorded.
        functional.run_graph(functional_view(model), inputs, operation_fn=operation_fn)
    except Exception:  # noqa: BLE001 - the last operation started is the one that failed
        return started[-1] if started else None
    return None


def _runs(model, inputs):
    """None if `model` runs on `inputs`, else the exception it raised."""
    try:
        model(inputs, training=False)
    except Exception as error:  # noqa: BLE001 - any failure means "cannot run"
        return error
    return None


def _custom_objects(model):
    """The classes of `model`'s layers from outside Keras, by class and registered name.

    Passed to deserialization so that a class the user did not register
    (which `keras.saving.load_model` would need in `custom_objects` too) is
    not taken for a config the pruning broke.
    """
    objects = {}
    for layer in model.layers:
        cls = type(layer)
        if not cls.__module__.startswith("keras."):
            objects[cls.__name__] = cls
            objects[keras.saving.get_registered_name(cls)] = cls
    return objects


def _rebuilt(item, custom_objects):
    """`item` (a layer or model) re-created as `keras.saving.load_model` would: config -> JSON -> object."""
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(item)))
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)


def _weight_shapes(layer):
    return [tuple(weight.shape) for weight in layer.weights]


def _mismatch(shapes, layer):
    return (
        f"rebuilds weights of shapes {shapes} from its config where the pruned layer holds "
        f"{_weight_shapes(layer)} (its config does not record the width the pruning gave it)"
    )


def _reload_problem(model):
    """None if `model` rebuilds from its config with the same weight shapes,
    else `(layer or None, reason)`."""
    custom_objects = _custom_objects(model)
    try:
        rebuilt = _rebuilt(model, custom_objects)
    except Exception as error:  # noqa: BLE001 - any failure means "does not reload"
        rebuilt, model_error = None, error
    if rebuilt is not None:
        for layer in model.layers:
            try:
                shapes = _weight_shapes(rebuilt.get_layer(layer.name))
            except ValueError:
                return layer, "is missing from the rebuilt model"
            if shapes != _weight_shapes(layer):
                return layer, _mismatch(shapes, layer)
        return None
    for layer in model.layers:  # which layer's config fails, alone
        try:
            copy = _rebuilt(layer, custom_objects)
        except Exception as error:  # noqa: BLE001
            return layer, f"raises {first_line(error)} when re-created from its config"
        if copy.built and _weight_shapes(copy) != _weight_shapes(layer):
            return layer, _mismatch(_weight_shapes(copy), layer)
    return None, f"its config raises {first_line(model_error)} when rebuilt"


@contextlib.contextmanager
def _no_state_left(model):
    """Removes the attributes that layers from outside Keras set on themselves while the block runs.

    Some layers cache what their first call computes from its inputs (keras-hub's
    diffusion scheduler keeps the noise levels of its first `num_steps`): run on a
    probe input, the returned model would keep the probe's.
    """
    foreign = [layer for layer in model.layers if not type(layer).__module__.startswith("keras.")]
    before = [set(vars(layer)) for layer in foreign]
    try:
        yield
    finally:
        for layer, keys in zip(foreign, before):
            for key in set(vars(layer)) - keys:
                object.__delattr__(layer, key)


def _rebuilds(model):
    """True when `model` is re-created from its config without an error (layer names aside)."""
    try:
        _rebuilt(model, _custom_objects(model))
    except Exception:  # noqa: BLE001 - any failure means "does not reload"
        return False
    return True


def _rebuild_error(model, layer):
    """The first line of what re-creating `model`'s layer named like `layer` from its config raises, or None."""
    originals = [candidate for candidate in model.layers if layer is not None and candidate.name == layer.name]
    if not originals:
        return None
    try:
        _rebuilt(originals[0], _custom_objects(model))
    except Exception as error:  # noqa: BLE001 - any failure means "does not reload"
        # Keras wraps the cause in "could not be deserialized" messages; the last one is the cause.
        cause = str(error).rsplit("Exception encountered: ", 1)
        return first_line(error) if len(cause) == 1 else first_line(type(error)(cause[1].strip()))
    return None


def _saved_problem(model, inputs):
    """None if `model` saved to `.keras` and loaded back gives its outputs on `inputs`, else why not.

    What `keras.saving.load_model` does besides rebuilding from the config:
    weights found by their path in the file (a weight the rebuilt model
    names otherwise keeps its initial value) and the custom objects looked
    up as they are registered.
    """
    with tempfile.TemporaryDirectory(prefix="tfprune-reload-") as directory:
        path = os.path.join(directory, "model.keras")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Keras warns of weights it skips; the outputs tell
                model.save(path)
                loaded = keras.saving.load_model(path, custom_objects=_custom_objects(model), compile=False)
            want = keras.tree.flatten(model(inputs, training=False))
            got = keras.tree.flatten(loaded(inputs, training=False))
        except Exception as error:  # noqa: BLE001 - any failure means "does not reload"
            return f"saved to `.keras`, it does not load back and run ({first_line(error)})"
    same = len(got) == len(want) and all(
        np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-5, rtol=1e-4)
        for a, b in zip(got, want)
    )
    return None if same else "saved to `.keras` and loaded back, it computes other outputs"


def _check_runs_and_reloads(pruned, given, inlined=None):
    """Refuses a pruned model that fails on a probe input or does not reload.

    The model must run on a probe input, rebuild from its config with the
    same weight shapes (which names the layer at fault) and, saved to a
    `.keras` file and loaded back, give the same outputs. A failure the
    input model `given` shares (a probe its layers cannot take, a layer
    whose config never loaded) is not the pruning's doing and passes. A
    layer that does not rebuild from its own config in the (`inlined`)
    input model either is named as such.
    """
    inputs = _probe_inputs(pruned)
    with _no_state_left(pruned):
        error = _runs(pruned, inputs)
    # The input model gets the same probe in its own structure (a keras-hub
    # backbone takes a dict; the inlined model, a list of the same inputs).
    if error is not None and _runs(given, _probe_inputs(given)) is None:
        operation = _failing_operation(pruned, inputs)
        raise ValueError(
            f"tfprune.prune refuses to return the pruned model '{pruned.name}': {_named(operation, 'it')} "
            f"fails on a probe input that the input model runs ({first_line(error)}), so its code or "
            "config likely holds a channel count the pruning changed; give it a handler that resizes "
            f"it (tfprune.graph.register_handler) or leave its channels alone ({_ignore(operation)})."
        )
    problem = _reload_problem(pruned)
    if problem is not None:
        layer, reason = problem
        why = getattr(layer, "_tfprune_not_inlined", None)
        if why is not None and _reload_problem(given) is None:
            # A block tfprune kept whole: the input model rebuilds it from its owner's config.
            raise ValueError(
                f"tfprune.prune refuses to return the pruned model '{pruned.name}': {_named(layer, 'a layer')} "
                f"could not be inlined ({why}), and on its own it {reason}, so the pruned model would not "
                "reload."
            )
        unpruned = _rebuild_error(inlined if inlined is not None else given, layer)
        if unpruned is not None and _rebuilds(given):
            # Not the pruning's doing: the input model loads back through its own config
            # (a keras-hub backbone's constructor), the pruned one through each layer's.
            raise ValueError(
                f"tfprune.prune refuses to return the pruned model '{pruned.name}': it would not reload, as "
                f"{_named(layer, 'the model')} raises {unpruned} when re-created from its own config even "
                "unpruned, and a pruned model loads back through each layer's config, not through the input "
                "model's."
            )
    if problem is not None and _reload_problem(given) is None:
        layer, reason = problem
        raise ValueError(
            f"tfprune.prune refuses to return the pruned model '{pruned.name}': it would not reload, as "
            f"{_named(layer, 'the model')} {reason}; give the layer a get_config that records its new "
            "width or a handler that resizes it (tfprune.graph.register_handler), or leave its channels "
            f"alone ({_ignore(layer)})."
        )
    # Also when the config check failed for the input model too: a keras-hub
    # model reloads through its own config, which the inlined model no longer has.
    with _no_state_left(pruned):
        saved = _saved_problem(pruned, inputs) if error is None else None
    if saved is not None and _saved_problem(given, _probe_inputs(given)) is None:
        culprit = f" ({_named(problem[0], 'the model')} {problem[1]})" if problem is not None else ""
        raise ValueError(
            f"tfprune.prune refuses to return the pruned model '{pruned.name}': {saved}{culprit}, where the "
            "input model reloads; this is a tfprune bug, please report it with the model."
        )


def _check_not_larger(pruned, given):
    """Refuses a pruned model with more parameters than the input model.

    Inlining and surgery copy layers through their configs; a layer holding
    another layer of the model (keras-hub's `MaskedLMHead` holds the token
    embedding it shares with the backbone) would come back with a copy of
    it, untying the weights. Nothing tfprune does may add parameters, so
    such a result is never returned.
    """
    before, after = given.count_params(), pruned.count_params()
    if after > before:
        raise ValueError(
            f"tfprune.prune refuses to return the pruned model '{pruned.name}': it has {after} parameters, "
            f"more than the {before} of the input model, so a weight the input model shares between "
            "layers (tied weights) was copied as two; this is a tfprune bug, please report it with the model."
        )


def _named(operation, otherwise):
    return f"layer '{operation.name}' ({type(operation).__name__})" if operation is not None else otherwise


def _ignore(operation):
    return f"skip=({operation.name!r},)" if operation is not None else "`skip=`"


def prune(
    model,
    criterion,
    rate=None,
    scope=None,
    targets="all",
    min_channels=1,
    max_group_rate=None,
    round_to=8,
    skip=(),
    reinitialize=False,
    data=None,
    seed=None,
    threshold=None,
    unknown="raise",
    verbose="auto",
    gqa="query_heads",
    ignore=None,
):
    """Removes the least important channels of a model; returns a smaller model.

    Scores every channel of the targeted groups with `criterion`, chooses the
    new width of each group (global or per-group rate, or a score threshold;
    then the guards and rounding of the module docstring) and rebuilds the
    model without the removed channels: the layers' weights are sliced, not
    masked, so the result is smaller and faster. With `targets="expansion"`,
    each squeeze-excite bottleneck keeps MobileNetV3's ratio (0.25 of its new
    expansion width, rounded to a multiple of 8; docs/METHODS.md §11).

    Args:
        model: A built Sequential or functional `keras.Model`. Not modified.
        criterion: String naming a registered criterion (`"l1"`, `"l2"`,
            `"bn_gamma"`, `"sparsity"`, `"sparsity_gamma"`, `"random"`,
            `"str_zero_filters"`, the data-driven `"activation"`, `"hrank"`,
            `"reconstruction"` and `"taylor"`, ...) or a criterion callable.
        rate: Float in [0, 1). Share of the targeted channels to remove;
            the count removed rounds down (`floor(rate * size)` in each group
            for `scope="group"`, of all targeted channels for `"global"`),
            so no group loses more than the rate asks.
        scope: `"global"` (one threshold across groups), `"group"` (each
            group loses `rate`) or None: `"global"` for criteria whose scores
            are comparable across groups (`"bn_gamma"`, `"sparsity_gamma"`,
            `"str_zero_filters"`; see `tfprune.criteria.comparable_across_groups`),
            `"group"` for the others. Why: raw filter norms grow with a
            layer's fan-in, and ranking them globally at rate 0.3 would
            remove every channel of 18 of ResNet50's 37 groups, 37 of
            InceptionV3's 94 and 78 of NASNetLarge's 173 (keras.applications,
            random weights), while `"group"` leaves every group 70% of its
            channels. A global ranking of such a criterion that would remove
            every channel of a group is refused. Defaults to `None`.
        targets: `"all"` (every prunable group), `"expansion"` (groups of the
            1x1 expansion convs of inverted-residual blocks, see
            `expansion_layers`), `"heads"` (the heads of `MultiHeadAttention`
            and grouped-query attention layers, see `gqa`), `"mlp"` (the
            hidden units of Dense and EinsumDense layers, such as a
            transformer's MLP, gated ones included, and the experts' units
            of keras-hub's mixture-of-experts blocks), `"hidden"` (a transformer's hidden width:
            the groups normalised by LayerNormalization/RMSNormalization,
            coupled through every residual add, embedding and attention
            projection; the normalisation statistics change, see
            `PruneResult.renormalized`) or a callable `ChannelGroup -> bool`
            (over the groups of `tfprune.graph.build(model)`, where hidden
            widths are not prunable).
        min_channels: Int. A group never keeps fewer. Defaults to `1`.
        max_group_rate: Optional float in (0, 1]. A group never loses a larger share.
        round_to: Int. Pruned widths are rounded up to a multiple of it (or
            to the group's size), so a group never loses more than asked.
            Attention heads (`targets="heads"`, the groups with `heads_of`)
            are not rounded: a head is already a large unit, so a 4-head
            layer at rate 0.5 loses 2 heads whatever `round_to` is.
            Defaults to `8`: on XNNPACK (LiteRT's CPU kernels) widths that
            are multiples of 8 ran at least as close to their MACs in the
            measurements (median speed-up / MACs ratio 92/90% at 1/2
            threads against 90/90% with 1, and 93/95% against 88/89% in an
            earlier run; MobileNetV3-Large and ResNet50, benchmarks/RESULTS.md
            "Structured pruning: LiteRT speed-up"). Groups of 8 channels or
            fewer are then left whole below rate 1 (with a warning); pass
            `round_to=1` for exact rates on small models.
        skip: Tuple of group or layer names whose groups are left alone
            (as `skip` of `tfprune.sparsify` and `prune_low_magnitude`).
            Defaults to `()`.
        reinitialize: Bool. If True, the pruned architecture gets fresh
            random weights (the "Rethinking" train-from-scratch baseline).
        data: Optional data passed to data-driven criteria: inputs, or for
            `"taylor"` inputs with labels (`(x, y)` or batches of `(x, y)`).
            A criterion with a `loss` argument (`"taylor"`) is given the
            model's compiled loss. A keras-hub causal LM takes calibration
            sequences as it takes inputs, `{"token_ids": ..., "padding_mask": ...}`
            (or a dataset of such dicts): padding does not count, and
            `"taylor"` uses the next-token loss (docs/METHODS.md §14).
        seed: Optional int passed to the criterion (`"random"`).
        threshold: Optional float. Instead of `rate`: remove every channel
            whose score is `<= threshold`.
        unknown: String. What to do with a layer or operation tfprune has no
            channel handler for: `"raise"` (default) refuses the model for a
            Keras layer or a `keras.ops` operation, and leaves the channels
            around a subclassed layer it could not inline unpruned, with a
            warning naming it; `"freeze"` leaves every channel around any of
            them unpruned, silently (see `tfprune.graph.build`).
        verbose: `"auto"` (1), 0, 1 or 2, as in Keras's `fit`: passed to
            criteria that read data (`"activation"`, `"hrank"`), which show a
            progress bar over the batches at 1. Defaults to `"auto"`.
        gqa: String. What a grouped-query attention layer (keras-hub's
            Llama, Gemma, Qwen and Mistral attention,
            `keras.layers.GroupQueryAttention`: several query heads share
            each key/value head) loses: `"query_heads"` (default), query
            heads, the same number in every key/value group (each group of
            query heads is a channel group, and the groups of one layer are
            given one width, the largest the rate leaves any of them), so
            the key/value projections and a decoder's key/value cache keep
            their size; or `"groups"`, whole key/value heads with their
            query heads (the cache shrinks too). Heads are scored on their
            query projection weights. Defaults to `"query_heads"`.
        ignore: Deprecated name of `skip`; it still works, with a
            `DeprecationWarning`.

    Layers that train sparsity (STR layers, `prune_low_magnitude` wrappers)
    are stripped first (`tfprune.strip`): their sparsity depends on the
    whole kernel, so the pruned model holds plain layers with their sparse
    kernels. `criterion="str_zero_filters"` takes no `rate`: with neither
    argument it removes exactly the filters channel-mode STR drove to zero.

    Numbers may be Python or NumPy scalars (`rate=np.float32(0.5)`). A model
    with nested models (a backbone called as one layer) is inlined first with
    `tfprune.graph.flatten`, so the pruned model is one flat functional model
    with the same layer names. A keras-hub causal LM (Llama, Gemma, ...) so
    pruned keeps its logits but not its class (`call_with_cache`,
    `generate`): run it step by step with a key/value cache through
    `tfprune.decoding.build_cache` / `call_with_cache`.

    The pruned model is checked before it is returned: it is run once on a
    probe input made from its input spec (one example, the values
    `tfprune.export` verifies with: floats uniform in [0, 1), token ids 0,
    masks 1; unknown sizes 32 on the spatial axes of images, 8 otherwise)
    and rebuilt from its config
    as `keras.saving.load_model` would (JSON config, same weight shapes). A
    failure the input model shares (a probe its layers cannot take, a layer
    whose config never loaded) is not the pruning's and passes; any other is
    refused, naming the layer. The check costs one forward pass and one
    config rebuild: 0.9 s on MobileNetV3-Small 32x32 (0.25 s and 0.7 s, on
    TensorFlow, 2 CPU cores), about as long as the pruning itself.

    Returns:
        Tuple `(pruned_model, PruneResult)`. `PruneResult.unchanged` is True
        when no channel was removed.

    Raises:
        TypeError: If `model` is not a graph model, `skip` is not a tuple of
            names, or both `skip` and its old name `ignore` are given.
        ValueError: If an argument is out of range (`verbose` included), both or neither of
            `rate`/`threshold` are given (`"str_zero_filters"` takes no rate and
            defaults to `threshold=0.0`), the criterion is unknown, `skip`
            names a layer the model does not have, no group may be pruned
            (every group frozen, e.g. a `channels_first` model, or excluded by
            `targets`/`skip`), the criterion scores none of the targeted
            groups, or it returns NaN scores, or `scope="global"` with a
            criterion whose scores are not comparable across groups would
            remove every channel of a group, or the pruned model fails on the
            probe input or does not rebuild from its config while the input
            model does (the message names the layer: typically a custom layer
            whose code or config holds a channel count).

    Warns:
        UserWarning: When the rate or threshold removes no channel (the
            returned model is then an unchanged copy), or removes less than
            half of what it asks from some targeted groups (one warning
            naming the first few and the cause: `round_to`, `min_channels`,
            `max_group_rate`, or a group too small for the rate), or a group
            would lose every channel and is kept at its guard (criteria
            ranked globally by design, such as BN scales, and thresholds).

    Example:

    >>> import tfprune
    >>> model = tfprune.models.mobilenet_v3("small", input_shape=(32, 32, 3))
    >>> small, result = tfprune.prune(model, "sparsity_gamma", rate=0.5, targets="expansion")
    >>> result.params_after < result.params_before
    True
    """
    require_graph_model(model, "tfprune.prune")
    ignore = renamed_argument("tfprune.prune", "skip", skip, (), "ignore", ignore)
    given = model
    model = _stripped(_inlined(model))
    rate, threshold = _zero_filters_threshold(criterion, rate, threshold)
    rate, threshold = _check_arguments(
        rate, threshold, scope, targets, min_channels, max_group_rate, round_to, ignore
    )
    score_function = criteria_module.get(criterion)
    criterion_name = _criterion_name(criterion)
    comparable = criteria_module.comparable_across_groups(criterion)
    if scope is None:
        scope = "global" if comparable else "group"
    graph = graph_module.build(model, unknown=unknown, hidden=targets == "hidden", gqa=gqa)
    _check_ignore(model, graph, ignore)
    targeted = _targeted_groups(model, graph, targets, ignore)
    _require_targets(model, graph, targeted, targets, ignore)
    all_scores = score_function(
        model, graph, data=data, seed=seed, **_criterion_arguments(score_function, verbose, given)
    )
    scores = _checked_scores(all_scores, targeted, criterion_name, model)
    asked, removals, used_threshold = _removal_counts(scores, rate, threshold, scope)
    if scope == "global" and threshold is None and not comparable:
        _refuse_emptied_groups(removals, scores, criterion_name, rate)

    widths, records, shortfalls = {}, [], []
    for group in targeted:
        if group.name not in scores:
            continue
        # A head is already a large unit: head groups are never rounded to `round_to`.
        width, guarded, causes = _guarded_width(
            group.name, group.size, removals[group.name], min_channels, max_group_rate,
            round_to if group.heads_of is None else 1,
        )  # fmt: skip
        records.append(GroupWidth(group.name, group.size, width, guarded))
        if width < group.size:
            widths[group.name] = width
        shortfall = _shortfall(group, asked[group.name], width, causes)
        if shortfall is not None:
            shortfalls.append(shortfall)
    records, widths = _balanced_heads(graph, records, widths)
    _warn_shortfalls(
        model, shortfalls, len(records), rate, threshold, sum(len(values) for values in scores.values()),
        removed_any=bool(widths),
    )  # fmt: skip
    se_policy = "keep_ratio" if targets == "expansion" else None
    with warnings.catch_warnings():  # `graph_module.build` above already said it
        warnings.filterwarnings("ignore", message="tfprune cannot see inside layer")
        pruned = surgery.set_widths(model, widths, scores=scores, se_policy=se_policy, unknown=unknown, gqa=gqa)
    if reinitialize:
        pruned = _fresh_weights(pruned)
    _check_not_larger(pruned, given)
    if _CHECK_PRUNED.get():  # unchanged too: inlining alone can give a model that does not reload
        _check_runs_and_reloads(pruned, given, model)
    before, after = analyze(model), analyze(pruned)
    result = PruneResult(
        criterion=criterion_name,
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
        renormalized=tuple(dict.fromkeys(
            layer for group in targeted if widths.get(group.name, group.size) < group.size
            for layer in group.normalized_by)),  # fmt: skip
        uncounted_layers=tuple(dict.fromkeys(before.uncounted_layers + after.uncounted_layers)),
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
    verbose="auto",
    unknown="raise",
):
    """Prunes each targeted group alone at each rate and evaluates (Li et al. 2017).

    The scan shows which groups tolerate pruning: flat curves can be pruned
    hard, steep ones should be kept or pruned lightly.

    Args:
        model: A built, compiled Sequential or functional `keras.Model`. Not modified.
        data: `(x, y)` arrays or a dataset of `(x, y)` batches for `evaluate`.
        rates: Tuple of floats in [0, 1). Each group loses `floor(rate *
            size)` channels (no `round_to`), so a small group at a small
            rate loses none and shows the baseline. Defaults to
            `(0.25, 0.5, 0.75)`.
        criterion: Criterion name or callable ranking channels inside a group.
            Defaults to `"l1"` (Li et al.).
        targets: `"all"`, `"expansion"` or a callable `ChannelGroup -> bool`.
        metric: Optional string. Which metric of `model.evaluate` to report;
            defaults to the first one that is not the loss.
        evaluate: Optional callable `model -> float` used instead of
            `model.evaluate` (then the model need not be compiled).
        seed: Optional int for the `"random"` criterion.
        verbose: `"auto"` (1), 0, 1 or 2, as in Keras: 1 shows a progress bar
            over the scans. Defaults to `"auto"`.
        unknown: String. `"raise"` (default) or `"freeze"`, as for `prune`.

    Returns:
        A `SensitivityResult` (with `.plot()`).

    Raises:
        ValueError: If the model is not compiled and no `evaluate` is given,
            a rate or `verbose` is out of range, no group may be pruned or the criterion
            scores none of the targeted groups (see `prune`).

    Example:

    >>> # result = tfprune.sensitivity(model, (x_test, y_test), rates=(0.3, 0.6))
    >>> # result.values["expanded_conv_1_expand"]
    """
    require_graph_model(model, "tfprune.sensitivity")
    model = _stripped(_inlined(model))
    if not all(is_number(rate) and 0 <= rate < 1 for rate in rates):
        raise ValueError(f"Every rate must be a number in [0, 1). Received: rates={rates!r}")
    rates = tuple(float(rate) for rate in rates)
    if evaluate is None:
        evaluate_named = _compiled_evaluator(model, data, metric)
    else:

        def evaluate_named(candidate):
            return metric or "metric", float(evaluate(candidate))

    graph = graph_module.build(model, unknown=unknown)
    groups = _targeted_groups(model, graph, targets, ignore=())
    _require_targets(model, graph, groups, targets, ignore=())
    scored = _checked_scores(
        criteria_module.get(criterion)(model, graph, seed=seed), groups, _criterion_name(criterion), model
    )
    groups = [group for group in groups if group.name in scored]
    metric_name, baseline = evaluate_named(model)
    progress = keras.utils.Progbar(
        len(groups) * len(rates), verbose=check_verbose(verbose, "tfprune.pruning.sensitivity"), unit_name="scan"
    )
    values = {}
    check = _CHECK_PRUNED.set(False)  # every pruned model is run by `evaluate` below
    try:
        for group in groups:
            values[group.name] = _scan(model, group, rates, criterion, seed, unknown, evaluate_named, progress)
    finally:
        _CHECK_PRUNED.reset(check)
    return SensitivityResult(metric=metric_name, baseline=baseline, rates=rates, values=values)


def _scan(model, group, rates, criterion, seed, unknown, evaluate_named, progress):
    """The metric after pruning `group` alone at each rate."""
    scores = []
    for rate in rates:
        with warnings.catch_warnings():
            # A small group at a small rate loses nothing (the rate asks less than one
            # channel): its value is then the baseline.
            warnings.filterwarnings("ignore", message="tfprune.prune removed no channel")
            pruned, _ = prune(
                model,
                criterion,
                rate=rate,
                scope="group",
                targets=lambda candidate, name=group.name: candidate.name == name,
                round_to=1,  # each rate exactly (rounded down), so the curve is over the rates asked for
                seed=seed,
                unknown=unknown,
            )
        scores.append(evaluate_named(pruned)[1])
        progress.add(1)
    return tuple(scores)
