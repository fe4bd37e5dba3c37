"""What a width search returns, and the helpers both searches share."""

import dataclasses

from tfprune import graph as graph_module
from tfprune import surgery
from tfprune._utils import require_graph_model
from tfprune.analysis import analyze
from tfprune.pruning import _targeted_groups  # the same `targets` rule as tfprune.prune
from tfprune.search.cost import CostModel
from tfprune.surgery import squeeze_excite_widths

__all__ = ["SearchResult"]


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The widths a search chose, the pruned model and the search's history.

    Attributes:
        method: String. `"abc"` or `"dmcp"`.
        widths: Dict `{group_name: width}` of every searched group (and of the
            squeeze-excite bottlenecks that follow them).
        model: The pruned `keras.Model`, built by channel surgery from the
            input model's weights (ABCPruner) or the trained weights (DMCP).
            Fine-tune it before use.
        history: Dict `{series name: tuple of floats}`: ABCPruner's
            `"best_fitness"` after the initial colony and after each cycle;
            DMCP's `"expected_cost_share"` after each epoch.
        fitness: Float or None. ABCPruner: the best candidate's metric after
            its short fine-tune.
        macs_before, macs_after, params_before, params_after: Ints (`tfprune.analyze`).

    Example:

    >>> result = tfprune.search.ABCPruner(model, (x, y), budget=0.5).search()  # doctest: +SKIP
    >>> result.macs_after / result.macs_before <= 0.5  # doctest: +SKIP
    True
    >>> figure = result.plot("search.png")  # doctest: +SKIP
    """

    method: str
    widths: dict
    model: object
    history: dict
    fitness: object
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int

    @property
    def macs_share(self):
        """Float. Share of the MACs the pruned model keeps."""
        return self.macs_after / self.macs_before

    @property
    def params_share(self):
        """Float. Share of the parameters the pruned model keeps."""
        return self.params_after / self.params_before

    def plot(self, path=None):
        """Plots each history series against the cycle or epoch.

        Args:
            path: Optional PNG path, written atomically.

        Returns:
            A `matplotlib.figure.Figure` (no pyplot, Agg-safe).

        Example:

        >>> figure = result.plot()                                   # doctest: +SKIP
        """
        from matplotlib.figure import Figure

        from tfprune.plots import _save

        figure = Figure(figsize=(6, 3.5 * len(self.history)))
        step = "cycle" if self.method == "abc" else "epoch"
        for row, (name, values) in enumerate(self.history.items()):
            axes = figure.add_subplot(len(self.history), 1, row + 1)
            axes.plot(range(len(values)), values, marker="o")
            axes.set_xlabel(f"{step} (0 = {'initial colony' if step == 'cycle' else 'first epoch'})")
            axes.set_ylabel(name.replace("_", " "))
            axes.grid(alpha=0.3)
        figure.suptitle(f"{self.method.upper()} width search")
        figure.tight_layout()
        return _save(figure, path)


def prepare(model, caller, targets, cost, unknown="raise"):
    """Checks the model; returns (graph, searched groups, CostModel).

    The cost model covers the searched groups and, for `targets="expansion"`,
    the squeeze-excite bottlenecks whose width follows them (`follows`).
    """
    require_graph_model(model, caller)
    graph = graph_module.build(model, unknown=unknown)
    searched = _targeted_groups(model, graph, targets, ignore=())
    if not searched:
        raise ValueError(
            f"`{caller}` found no prunable group for targets={targets!r}; use targets='all' or "
            "check `tfprune.graph.build(model)` for why the groups are not prunable."
        )
    names = [group.name for group in searched]
    follows = {}
    if targets == "expansion":
        follows = {
            group.name: group.squeeze_excite_of
            for group in graph.groups
            if group.squeeze_excite_of in names and group.name not in names
        }
    return graph, searched, follows, CostModel(model, graph, names + list(follows), cost=cost)


def build_pruned(model, graph, widths, follows, scores=None, unknown="raise"):
    """Channel surgery for searched widths; returns (full widths dict, pruned model)."""
    if follows:
        widths = squeeze_excite_widths(graph, widths)
    changed = {name: width for name, width in widths.items() if width < graph[name].size}
    scores = {name: values for name, values in (scores or {}).items() if name in changed}
    return widths, surgery.set_widths(model, changed, scores=scores, unknown=unknown)


def make_result(method, model, pruned, widths, history, fitness=None):
    before, after = analyze(model), analyze(pruned)
    return SearchResult(
        method=method,
        widths=dict(widths),
        model=pruned,
        history={name: tuple(float(value) for value in values) for name, values in history.items()},
        fitness=fitness,
        macs_before=before.macs,
        macs_after=after.macs,
        params_before=before.params,
        params_after=after.params,
    )


def compile_like(model, candidate):
    """Compiles `candidate` with `model`'s compile settings (a fresh optimizer)."""
    config = model.get_compile_config() if model.compiled else None
    if config is not None:
        candidate.compile_from_config(config)
    return config is not None

