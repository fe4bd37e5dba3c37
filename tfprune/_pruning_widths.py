"""How many channels each group keeps: `tfprune.prune`'s targets, argument checks and width guards.

`_targeted_groups` picks the groups `targets` and `skip` leave to prune,
`_removal_counts` turns the criterion's scores into channels to remove per
group (a global ranking, a rate per group or a threshold), and
`_guarded_width` applies `min_channels`, `max_group_rate` and `round_to`;
`_warn_shortfalls` says when the guards kept much more than was asked. The
rules are those of the `tfprune.pruning` module docstring.
"""

import dataclasses
import math
import warnings

import keras
import numpy as np

from tfprune import graph as graph_module
from tfprune._keras import functional
from tfprune._utils import (
    functional_view,
    is_integer,
    is_number,
)
from tfprune.structure import expansion_layers

_SCOPES = ("global", "group")


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
    return isinstance(layer, _MLP_LAYERS) or getattr(
        graph_module.handler_for(layer), "makes_mlp_units", False
    )


def _check_arguments(
    rate, threshold, scope, targets, min_channels, max_group_rate, round_to, ignore
):
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
        raise ValueError(
            f"`min_channels` must be an int >= 1. Received: min_channels={min_channels!r}"
        )
    if max_group_rate is not None and (
        not is_number(max_group_rate) or not 0 < max_group_rate <= 1
    ):
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
    return (None if rate is None else float(rate)), (
        None if threshold is None else float(threshold)
    )


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
        shown = ", ".join(repr(name) for name in emptied[:5]) + (
            ", ..." if len(emptied) > 5 else ""
        )
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
    by_rate = (
        0 if max_group_rate is None else min(size, math.ceil(size * (1 - max_group_rate) - 1e-9))
    )
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
