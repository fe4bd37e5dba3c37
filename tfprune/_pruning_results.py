"""What `tfprune.prune` and `tfprune.sensitivity` return: `GroupWidth`, `PruneResult`, `SensitivityResult`.

Defined here and re-exported by `tfprune.pruning`, where they are documented.
"""

import dataclasses


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
        latency: Dict or None. With a latency budget (`prune(..., latency=)`):
            `target_ms`, `predicted_ms` (the chosen widths, by the latency
            model), `dense_predicted_ms`, `threads`, and where the model was
            timed here, `measured_ms` and `dense_measured_ms` (interleaved
            LiteRT runs of the pruned and the given model) and
            `prediction_error` (predicted / measured - 1).

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
    latency: object = None

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
        if self.latency is not None:
            lines.append(_latency_line(self.latency))
        return "\n".join(lines)


def _shown(names, limit=3, quote=True):
    """The first `limit` names, comma-separated, with ", ..." when there are more."""
    shown = [repr(name) if quote else name for name in names[:limit]]
    return ", ".join(shown) + (", ..." if len(names) > limit else "")


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


def _latency_line(latency):
    """One line of `str(PruneResult)` for a latency budget.

    Example:

    >>> _latency_line({"target_ms": 5.0, "predicted_ms": 4.9, "dense_predicted_ms": 10.0, "threads": 1,
    ...                "measured_ms": 5.1, "dense_measured_ms": 10.2, "prediction_error": -0.04})
    'latency (LiteRT, 1 thread): target 5.00 ms, predicted 4.90 ms (dense 10.00), measured 5.10 ms (dense 10.20; prediction -4.0%)'
    """
    threads = latency["threads"]
    line = (
        f"latency (LiteRT, {threads} thread{'s' if threads != 1 else ''}): target {latency['target_ms']:.2f} ms, "
        f"predicted {latency['predicted_ms']:.2f} ms (dense {latency['dense_predicted_ms']:.2f})"
    )
    if latency.get("measured_ms") is not None:
        line += (
            f", measured {latency['measured_ms']:.2f} ms (dense {latency['dense_measured_ms']:.2f}; "
            f"prediction {100 * latency['prediction_error']:+.1f}%)"
        )
    return line
