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

import functools
import inspect
import warnings

import keras

from tfprune import _pruning_latency as pruning_latency
from tfprune import criteria as criteria_module
from tfprune import graph as graph_module
from tfprune import sparsity as sparsity_module
from tfprune import surgery
from tfprune._pruning_checks import _CHECK_PRUNED, _check_not_larger, _check_runs_and_reloads
from tfprune._pruning_checks import _PROBE_SIZE as _PROBE_SIZE  # read by the tests
from tfprune._pruning_checks import _probe_inputs as _probe_inputs  # read by the tests
from tfprune._pruning_results import GroupWidth, PruneResult, SensitivityResult
from tfprune._pruning_widths import (
    _balanced_heads,
    _check_arguments,
    _check_ignore,
    _checked_scores,
    _guarded_width,
    _refuse_emptied_groups,
    _removal_counts,
    _require_targets,
    _shortfall,
    _targeted_groups,
    _warn_shortfalls,
)
from tfprune._pruning_widths import _floor as _floor  # read by tfprune.pruners
from tfprune._utils import (
    check_verbose,
    clone_graph,
    is_number,
    renamed_argument,
    require_graph_model,
)
from tfprune.analysis import analyze
from tfprune.structure import expansion_layers

__all__ = ["GroupWidth", "PruneResult", "SensitivityResult", "expansion_layers", "prune", "sensitivity"]


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
    latency=None,
    latency_model=None,
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
        latency: Instead of `rate`: a LiteRT latency budget, as a share of
            the dense model's latency in (0, 1] (`latency=0.6`) or as
            milliseconds on the device a `latency_model` was measured on
            (`latency="8ms"`). The rate is chosen so that the widths it gives
            (same criterion, scope, guards and rounding) are predicted by
            the latency model to run at or under the budget, as close to it
            as a channel allows. `PruneResult.latency` reports the target and
            the prediction, and where the model was timed here the measured
            latency of the pruned and the given model (interleaved runs).
            Defaults to `None`.
        latency_model: Optional `tfprune.latency.LatencyModel` (from
            `measure_latency_model`, or `fit_latency_model` on a phone's
            times, or `LatencyModel.load`) covering the targeted groups.
            Without one, `latency=` times the model here first:
            `measure_latency_model(model, groups=<targeted>)` exports and
            times 24 pruned copies on LiteRT (1 thread), minutes for a
            MobileNet at 224x224; keep and pass it to prune repeatedly.

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
            With `latency`: a budget that is neither a share in (0, 1] nor
            milliseconds like "8ms", given with `rate`/`threshold`,
            milliseconds without a `latency_model`, a latency model not
            covering a targeted group, or a budget no rate reaches (the
            layers no targeted group changes take the rest).

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
    latency_share, latency_ms = pruning_latency.check_latency(latency, latency_model, rate, threshold)
    rate, threshold = _check_arguments(
        0.0 if latency is not None else rate, threshold, scope, targets, min_channels, max_group_rate, round_to,
        ignore,
    )  # fmt: skip
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

    def widths_at(rate):
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
        return widths, records, shortfalls, used_threshold

    latency_report = None
    if latency is not None:
        rate, latency_report = _rate_for_latency(
            model, widths_at, latency_model, latency_share, latency_ms, [name for name in scores]
        )
    widths, records, shortfalls, used_threshold = widths_at(rate)
    _warn_shortfalls(
        model, shortfalls, len(records), rate, threshold, sum(len(values) for values in scores.values()),
        removed_any=bool(widths),
    )  # fmt: skip
    se_policy = "keep_ratio" if targets == "expansion" else None
    # The graph scored above is the one cut: the model is traced once.
    pruned = surgery.set_widths(model, widths, scores=scores, se_policy=se_policy, graph=graph)
    if reinitialize:
        pruned = _fresh_weights(pruned)
    _check_not_larger(pruned, given)
    if _CHECK_PRUNED.get():  # unchanged too: inlining alone can give a model that does not reload
        _check_runs_and_reloads(pruned, given, model)
    if latency_report is not None and latency_model is None:  # timed here: measure what it predicted
        measured = pruning_latency.measured_latency(model, pruned, latency_report["threads"])
        latency_report = pruning_latency.report(
            latency_report["target_ms"], latency_report["predicted_ms"], latency_report["model"], measured
        )
    elif latency_report is not None:
        latency_report = pruning_latency.report(
            latency_report["target_ms"], latency_report["predicted_ms"], latency_report["model"]
        )
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
        latency=latency_report,
    )
    return pruned, result


def _rate_for_latency(model, widths_at, latency_model, share, milliseconds, group_names):
    """`(rate, {target_ms, predicted_ms, model, threads})` for a latency budget."""
    if latency_model is None:
        from tfprune.latency import measure_latency_model

        latency_model = measure_latency_model(model, groups=group_names)
    pruning_latency.check_coverage(latency_model, [name for name in group_names], model.name)

    def feasible_widths(rate):
        try:
            with warnings.catch_warnings():  # the chosen rate's warnings are given once, below
                warnings.simplefilter("ignore")
                return widths_at(rate)[0]
        except ValueError:  # a global ranking that would empty a group: too far
            return None

    target_ms = milliseconds if milliseconds is not None else share * latency_model.total
    rate, predicted = pruning_latency.rate_for_latency(feasible_widths, latency_model, target_ms)
    return rate, {"target_ms": target_ms, "predicted_ms": predicted, "model": latency_model,
                  "threads": latency_model.threads}  # fmt: skip


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


# `doctest.testmod(tfprune.pruning)` runs the examples of the results it re-exports too.
__test__ = {
    "PruneResult.complete": PruneResult.complete.__doc__,
    "PruneResult.unchanged": PruneResult.unchanged.__doc__,
}
