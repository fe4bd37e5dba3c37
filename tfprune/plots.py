"""Matplotlib figures for structured pruning.

Every function returns a `matplotlib.figure.Figure` (built without pyplot, so
it works on headless machines with the Agg backend and never opens a window)
and, when given `path`, also writes it as a PNG atomically (a crash never
leaves a half-written file).
"""

import numpy as np

# Figures are created without pyplot: PNGs are rendered by Agg, no window is
# ever opened and the user's global backend is left alone.
from matplotlib.figure import Figure

from tfprune._utils import atomic_path

__all__ = ["accuracy_vs_rate", "gamma_distribution", "layer_sparsity", "sensitivity", "widths"]


def _save(figure, path, overwrite=True):
    if path is not None:
        with atomic_path(path, overwrite=overwrite) as temporary:
            figure.savefig(temporary, format="png", dpi=120)
    return figure


def _gammas_of(value, label):
    import keras

    if isinstance(value, keras.Model):
        from tfprune.structure import batch_norm_layers

        layers = batch_norm_layers(value)
        if not layers:
            raise ValueError(
                f"Model '{value.name}' given for {label!r} has no BatchNormalization with a scale; "
                "pass a model with BN layers or an array of γ values."
            )
        return np.concatenate([np.asarray(layer.gamma.numpy()) for layer in layers])
    return np.asarray(value, dtype="float64").reshape(-1)


def gamma_distribution(gammas, path=None, bins=50, log_count=True):
    """Histograms of |γ| of BatchNormalization scales, one per training run.

    Shows how an L1 strength (Network Slimming, `BNSparsity`) pushes the
    scales towards zero: pass the runs for several `l1` values.

    Args:
        gammas: Dict `{label: model or array}`; a model contributes the γ of all
            its BatchNormalization layers.
        path: Optional PNG path to write.
        bins: Int. Number of histogram bins. Defaults to `50`.
        log_count: Bool. Logarithmic count axis. Defaults to `True`.

    Returns:
        A `matplotlib.figure.Figure`.

    Raises:
        ValueError: If `gammas` is empty or a model has no BN scales.

    Example:

    >>> import numpy as np, tfprune
    >>> figure = tfprune.plots.gamma_distribution(
    ...     {"l1=0": np.random.rand(100), "l1=1e-4": np.random.rand(100) ** 4})
    """
    if not gammas:
        raise ValueError("`gammas` is empty; pass {label: model or array of γ}.")
    magnitudes = {label: np.abs(_gammas_of(value, label)) for label, value in gammas.items()}
    upper = max(float(values.max()) for values in magnitudes.values()) or 1.0
    edges = np.linspace(0.0, upper, bins + 1)
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for label, values in magnitudes.items():
        axes.hist(values, bins=edges, histtype="step", linewidth=1.5, label=str(label))
    if log_count:
        axes.set_yscale("log")
    axes.set_xlabel("|γ| (BatchNormalization scale)")
    axes.set_ylabel("channels")
    axes.set_title("BN scale distribution")
    axes.legend()
    figure.tight_layout()
    return _save(figure, path)


def widths(before, after=None, path=None):
    """Bar chart of every group's width before and after pruning.

    Args:
        before: Dict `{group_name: width}`, or a `PruneResult` (then `after` is
            taken from it).
        after: Dict `{group_name: width}`. Not needed with a `PruneResult`.
        path: Optional PNG path to write.

    Returns:
        A `matplotlib.figure.Figure`.

    Raises:
        ValueError: If `after` is missing or names groups that `before` lacks.

    Example:

    >>> import tfprune
    >>> figure = tfprune.plots.widths({"block_1": 64, "block_2": 72}, {"block_1": 30, "block_2": 41})
    """
    if hasattr(before, "widths_before"):
        before, after = before.widths_before, before.widths_after
    if after is None:
        raise ValueError("`after` is missing; pass {group_name: width} or a PruneResult as `before`.")
    unknown = sorted(set(after) - set(before))
    if unknown:
        raise ValueError(f"`after` has groups that `before` lacks: {unknown}; use the same names.")
    names = list(before)
    positions = np.arange(len(names))
    figure = Figure(figsize=(max(6, 0.4 * len(names)), 4))
    axes = figure.add_subplot()
    axes.bar(positions - 0.2, [before[name] for name in names], width=0.4, label="before")
    axes.bar(positions + 0.2, [after.get(name, before[name]) for name in names], width=0.4, label="after")
    axes.set_xticks(positions, names, rotation=90, fontsize=7)
    axes.set_ylabel("channels")
    axes.set_title("Width per group")
    axes.legend()
    figure.tight_layout()
    return _save(figure, path)


def accuracy_vs_rate(curves, path=None, baseline=None, metric="accuracy"):
    """Accuracy (or another metric) against the pruning rate, one line per method.

    Args:
        curves: Dict `{method: (rates, values)}`.
        path: Optional PNG path to write.
        baseline: Optional float drawn as a horizontal line (the unpruned model).
        metric: String. Y-axis label. Defaults to `"accuracy"`.

    Returns:
        A `matplotlib.figure.Figure`.

    Raises:
        ValueError: If `curves` is empty or a curve's rates and values differ in length.

    Example:

    >>> import tfprune
    >>> figure = tfprune.plots.accuracy_vs_rate({"l1": ([0.3, 0.5], [0.95, 0.93])}, baseline=0.96)
    """
    if not curves:
        raise ValueError("`curves` is empty; pass {method: (rates, values)}.")
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for method, (rates, values) in curves.items():
        if len(rates) != len(values):
            raise ValueError(
                f"Curve {method!r} has {len(rates)} rates but {len(values)} values; give one value per rate."
            )
        axes.plot(rates, values, marker="o", label=str(method))
    if baseline is not None:
        axes.axhline(baseline, color="gray", linestyle="--", label="unpruned")
    axes.set_xlabel("pruning rate")
    axes.set_ylabel(metric)
    axes.legend()
    figure.tight_layout()
    return _save(figure, path)


def sensitivity(result, path=None):
    """Li et al.'s sensitivity curves: the metric after pruning one group alone.

    Args:
        result: A `SensitivityResult` from `tfprune.sensitivity`.
        path: Optional PNG path to write.

    Returns:
        A `matplotlib.figure.Figure`.

    Example:

    >>> # tfprune.sensitivity(model, (x, y)).plot("sensitivity.png")
    """
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for name, values in result.values.items():
        axes.plot(result.rates, values, marker=".", linewidth=1, label=name)
    axes.axhline(result.baseline, color="gray", linestyle="--", label="unpruned")
    axes.set_xlabel("rate of the group pruned alone")
    axes.set_ylabel(result.metric)
    axes.set_title("Sensitivity per group")
    if len(result.values) <= 20:
        axes.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    return _save(figure, path)


def layer_sparsity(report, path=None):
    """Bar chart of the learned per-layer sparsity of a model's STR layers.

    Args:
        report: A `tfprune.sparsity_report(model)` result (or any object with
            `layers`, a list of dicts with `name` and `sparsity`, and
            `global_sparsity`).
        path: Optional PNG path to write.

    Returns:
        A `matplotlib.figure.Figure`.

    Raises:
        ValueError: If the report has no layers.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, tfprune.layers.STRDense(2, s_init=5.0)(inputs))
    >>> figure = tfprune.plots.layer_sparsity(tfprune.sparsity_report(model))
    """
    if not report.layers:
        raise ValueError("The sparsity report has no STR layers; sparsify the model first.")
    names = [record["name"] for record in report.layers]
    positions = np.arange(len(names))
    figure = Figure(figsize=(max(6, 0.3 * len(names)), 4))
    axes = figure.add_subplot()
    axes.bar(positions, [100.0 * record["sparsity"] for record in report.layers])
    axes.axhline(100.0 * report.global_sparsity, color="black", linestyle="--",
                 label=f"global {report.global_sparsity:.1%}")
    axes.set_xticks(positions, names, rotation=90, fontsize=6)
    axes.set_ylabel("zero weights (%)")
    axes.set_ylim(0, 100)
    axes.set_title("Learned sparsity per STR layer")
    axes.legend()
    figure.tight_layout()
    return _save(figure, path)
