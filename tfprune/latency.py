"""LiteRT latency of a model as a function of its channel groups' widths.

MACs are an imperfect proxy for time on a phone: XNNPACK runs a 1x1
convolution far closer to peak than a depthwise one, and the element-wise
work after each layer (batch normalization folded away, but activations,
squeeze-and-excite products, residual additions) costs per activation, not
per multiply. `LatencyModel` predicts the latency of any width combination
from a few features that each shrink in a known way with the widths:

- the MACs of each kind of layer (full convolutions, 1x1 convolutions,
  depthwise convolutions, dense/einsum layers): `tfprune.search.CostModel`'s
  exact products of the shares kept on each weight axis;
- the activations each kind of layer writes (its output positions times the
  output channels kept), which carries the memory-bound work after it;
- a constant (the layers no group changes, the interpreter's overhead).

Its coefficients (milliseconds per MAC and per activation of each kind) are
fitted by non-negative least squares to latencies measured on the runtime
itself: `measure_latency_model` exports a few randomly pruned copies of the
model to LiteRT and times them interleaved in one process here; on a phone,
`write_latency_samples` writes the same copies and a manifest, the LiteRT
benchmark tool times them there, and `fit_latency_model` fits to those times.
"""

import json
import os
import pathlib
import tempfile

import keras
import numpy as np

from tfprune.search.cost import CostModel

__all__ = [
    "LatencyModel",
    "fit_latency_model",
    "measure_latency_model",
    "sample_widths",
    "write_latency_samples",
]

KINDS = ("conv", "pointwise", "depthwise", "dense")
_FORMAT = "tfprune-latency-model/1"


def _kind(layer, path):
    """Which of `KINDS` a kernel belongs to."""
    if "depthwise" in path.rsplit("/", 1)[-1] or isinstance(layer, (keras.layers.DepthwiseConv2D,)):
        return "depthwise"
    if "pointwise" in path.rsplit("/", 1)[-1]:
        return "pointwise"
    if isinstance(layer, keras.layers.DepthwiseConv1D):
        return "depthwise"
    if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense)):
        return "dense"
    kernel_size = getattr(layer, "kernel_size", None)
    if kernel_size is not None:
        return "pointwise" if all(size == 1 for size in kernel_size) else "conv"
    return "dense"


def _layers_by_weight(model):
    found = {}
    for layer in model.layers:
        for weight in layer.weights:
            found.setdefault(weight.path, layer)
    return found


class _Features:
    """The latency features of a model as a function of group shares."""

    def __init__(self, costs, kinds, output_slots, output_elements):
        self.costs = costs
        self.kinds = np.asarray(kinds, dtype=np.int64)
        self.output_slots = np.asarray(output_slots, dtype=np.int64)
        self.output_elements = np.asarray(output_elements, dtype=np.float64)

    @classmethod
    def of(cls, model, graph, groups):
        costs = CostModel(model, graph, groups, cost="macs")
        layers = _layers_by_weight(model)
        shapes = {weight.path: tuple(weight.shape) for weight in model.weights}
        kinds, output_slots, output_elements = [], [], []
        for (path, axes), macs in zip(costs.terms, costs.term_costs):
            layer, shape = layers.get(path), shapes.get(path, ())
            kind = _kind(layer, path)
            # The output channels: the last axis, or a depthwise kernel's channel axis.
            output_axis = (
                len(shape) - 2 if kind == "depthwise" and len(shape) >= 2 else len(shape) - 1
            )
            kinds.append(KINDS.index(kind))
            output_slots.append(axes.index(output_axis) if output_axis in axes else -1)
            entries_per_output = float(np.prod(shape)) / shape[output_axis] if shape else 1.0
            output_elements.append(macs / entries_per_output if entries_per_output else 0.0)
        return cls(costs, kinds, output_slots, output_elements)

    def __call__(self, shares):
        """`[MACs of each kind] + [activations written by each kind]`, in millions."""
        if not len(self.kinds):
            return np.zeros(2 * len(KINDS))
        axis_shares = self.costs.axis_shares(shares)
        kept = np.prod(axis_shares, axis=0)
        columns = np.arange(len(self.kinds))
        output_share = np.where(
            self.output_slots >= 0, axis_shares[np.maximum(self.output_slots, 0), columns], 1.0
        )
        macs = np.bincount(self.kinds, weights=self.costs.term_costs * kept, minlength=len(KINDS))
        elements = np.bincount(
            self.kinds, weights=self.output_elements * output_share, minlength=len(KINDS)
        )
        return np.concatenate([macs, elements]) / 1e6

    def get_config(self):
        return {
            "costs": self.costs.get_config(),
            "kinds": self.kinds.tolist(),
            "output_slots": self.output_slots.tolist(),
            "output_elements": self.output_elements.tolist(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            CostModel.from_config(config["costs"]),
            config["kinds"],
            config["output_slots"],
            config["output_elements"],
        )


class LatencyModel:
    """Predicted LiteRT latency (milliseconds) of a model as a function of group widths.

    Build one with `measure_latency_model` (times the runtime here) or
    `fit_latency_model` (from times measured elsewhere, e.g. on a phone), and
    keep it with `save` / `LatencyModel.load`.

    Attributes:
        names: Tuple of the group names whose width varies.
        sizes: Int array of their full sizes.
        coefficients: Float array: milliseconds per million MACs of each kind
            in `KINDS`, then per million activations written by each kind.
        intercept: Float. Milliseconds that no varying group changes.
        threads: Int. The interpreter threads the times were measured with.
        runtime: String. Where the times come from (e.g. "ai-edge-litert
            2.3.0, XNNPACK, x86_64"), free text.
        total: Float. The predicted latency of the full model.

    Example:

    >>> import keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> hidden = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Conv2D(4, 1, name="head")(hidden))
    >>> times = [({"conv": 16}, 2.0), ({"conv": 8}, 1.2), ({"conv": 4}, 0.8)]  # measured
    >>> latency = fit_latency_model(model, times)
    >>> round(latency.total, 3), round(latency.of_widths({"conv": 12}), 3)
    (2.0, 1.6)
    """

    def __init__(self, features, coefficients, intercept, threads=1, runtime=""):
        self._features = features
        self.names = features.costs.names
        self.sizes = features.costs.sizes
        self.coefficients = np.asarray(coefficients, dtype=np.float64)
        self.intercept = float(intercept)
        self.threads = int(threads)
        self.runtime = str(runtime)
        self.total = self(np.ones(len(self.names)))

    def __call__(self, shares):
        """The predicted milliseconds when each group keeps a share of its channels.

        Args:
            shares: 1-D array with one share in [0, 1] per name of `names`.

        Returns:
            Float milliseconds.

        Example:

        >>> latency(np.array([0.5]))                                  # doctest: +SKIP
        1.2
        """
        return float(self.intercept + self._features(shares) @ self.coefficients)

    def of_widths(self, widths):
        """The predicted milliseconds with some groups at integer widths (the others whole).

        Args:
            widths: Dict `{group name: width}`; unknown names raise.

        Returns:
            Float milliseconds.

        Raises:
            KeyError: If a name is not one of `names`.

        Example:

        >>> latency.of_widths({"conv": 8})                            # doctest: +SKIP
        1.2
        """
        return self(_shares(self.names, self.sizes, widths))

    def get_config(self):
        """The model as plain JSON-able data.

        Returns:
            Dict; `LatencyModel.from_config` rebuilds an equal model from it.

        Example:

        >>> LatencyModel.from_config(latency.get_config()).total == latency.total  # doctest: +SKIP
        True
        """
        return {
            "format": _FORMAT,
            "features": self._features.get_config(),
            "coefficients": self.coefficients.tolist(),
            "intercept": self.intercept,
            "threads": self.threads,
            "runtime": self.runtime,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds a latency model from `get_config()`.

        Args:
            config: Dict returned by `get_config`.

        Returns:
            A `LatencyModel`.

        Raises:
            ValueError: If `config` is not a tfprune latency model.

        Example:

        >>> same = LatencyModel.from_config(latency.get_config())     # doctest: +SKIP
        """
        if not isinstance(config, dict) or config.get("format") != _FORMAT:
            raise ValueError(f"Not a tfprune latency model (expected format {_FORMAT!r}).")
        return cls(
            _Features.from_config(config["features"]),
            config["coefficients"],
            config["intercept"],
            config["threads"],
            config["runtime"],
        )

    def save(self, path):
        """Writes the model to a JSON file atomically.

        Args:
            path: String or path-like; the file is replaced if it exists.

        Example:

        >>> latency.save("mobilenet_v3_pixel7_1thread.json")            # doctest: +SKIP
        """
        path = pathlib.Path(path)
        handle, temporary = tempfile.mkstemp(
            prefix=".tfprune-", suffix=".json", dir=path.parent or "."
        )
        with os.fdopen(handle, "w") as file:
            json.dump(self.get_config(), file)
        os.replace(temporary, path)

    @classmethod
    def load(cls, path):
        """Reads a model written by `save`.

        Args:
            path: String or path-like written by `save`.

        Returns:
            A `LatencyModel`.

        Raises:
            FileNotFoundError: If there is no such file.
            ValueError: If the file is not a tfprune latency model.

        Example:

        >>> latency = LatencyModel.load("mobilenet_v3_pixel7_1thread.json")  # doctest: +SKIP
        """
        with open(path) as file:
            try:
                config = json.load(file)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not a tfprune latency model: {error}") from error
        return cls.from_config(config)


def _shares(names, sizes, widths):
    index = {name: position for position, name in enumerate(names)}
    shares = np.ones(len(names))
    for name, width in widths.items():
        if name not in index:
            raise KeyError(
                f"Group '{name}' is not one of the latency model's groups {list(names)}."
            )
        shares[index[name]] = width / sizes[index[name]]
    return shares


def sample_widths(sizes, samples, seed=0, smallest=0.25, round_to=8):
    """Width combinations that span what pruning produces, for fitting a latency model.

    The first is the full model; a quarter of the rest prune every group by
    the same share (evenly from 1 to `smallest`), the others draw each
    group's share independently and uniformly from `[smallest, 1]`. Widths
    are multiples of `round_to` (or the full size), at least `round_to`.

    Args:
        sizes: Dict `{group name: size}`.
        samples: Int >= 2. How many combinations.
        seed: Int. Random seed.
        smallest: Float in (0, 1). The smallest share drawn.
        round_to: Positive int.

    Returns:
        List of dicts `{group name: width}`.

    Raises:
        ValueError: If `samples` < 2 or `smallest` is not in (0, 1).

    Example:

    >>> sample_widths({"a": 64, "b": 32}, 3, seed=0)[0]
    {'a': 64, 'b': 32}
    """
    if not isinstance(samples, int) or samples < 2:
        raise ValueError(f"`samples` must be an int of at least 2. Received: samples={samples!r}")
    if not 0 < smallest < 1:
        raise ValueError(f"`smallest` must be a share in (0, 1). Received: smallest={smallest!r}")
    rng = np.random.default_rng(seed)
    uniform = max(1, (samples - 1) // 4)
    combinations = [dict(sizes)]
    for index in range(samples - 1):
        if index < uniform:
            share = 1 - (1 - smallest) * (index + 1) / uniform
            shares = {name: share for name in sizes}
        else:
            shares = {name: rng.uniform(smallest, 1) for name in sizes}
        combinations.append(
            {name: _rounded(size, shares[name], round_to) for name, size in sizes.items()}
        )
    return combinations


def _rounded(size, share, round_to):
    if size <= round_to:
        return size
    return int(min(size, max(round_to, round(share * size / round_to) * round_to)))


def _nonnegative_fit(features, milliseconds):
    """Non-negative least squares with a free non-negative intercept (projected gradient, exact enough)."""
    from scipy.optimize import nnls

    design = np.column_stack([np.ones(len(features)), features])
    scale = np.maximum(np.abs(design).max(axis=0), 1e-12)
    solution, _ = nnls(design / scale, np.asarray(milliseconds, dtype=np.float64))
    solution = solution / scale
    return solution[1:], solution[0]


def fit_latency_model(model, measurements, groups=None, threads=1, runtime="", graph=None):
    """Fits a latency model to measured latencies of pruned copies of `model`.

    Args:
        model: The full Keras model the copies were pruned from. Not modified.
        measurements: List of `(widths, milliseconds)`, `widths` a dict
            `{group name: width}` (the copies `write_latency_samples` wrote,
            with the times measured for them).
        groups: Group names whose width varies. Defaults to every group named
            in `measurements`.
        threads: Int. Threads the times were measured with (recorded).
        runtime: String describing where they were measured (recorded).
        graph: Optional `tfprune.graph.build(model)` to reuse.

    Returns:
        A `LatencyModel`.

    Raises:
        ValueError: If there are fewer measurements than three, or a time is
            not a positive number.

    Example:

    >>> import keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> model = keras.Model(inputs, keras.layers.Conv2D(16, 3, name="conv")(inputs))
    >>> fit_latency_model(model, [({"conv": 16}, 2.0), ({"conv": 8}, 1.2), ({"conv": 4}, 0.8)]).names
    ('conv',)
    """
    from tfprune import graph as graph_module

    if len(measurements) < 3:
        raise ValueError(
            f"A latency model needs at least 3 measurements. Received: {len(measurements)}"
        )
    for _, milliseconds in measurements:
        if not isinstance(milliseconds, (int, float)) or not milliseconds > 0:
            raise ValueError(
                f"Measured latencies must be positive numbers of milliseconds. Received: {milliseconds!r}"
            )
    graph = graph if graph is not None else graph_module.build(model)
    names = (
        list(groups)
        if groups is not None
        else sorted({name for widths, _ in measurements for name in widths})
    )
    features = _Features.of(model, graph, names)
    rows = [
        features(_shares(features.costs.names, features.costs.sizes, widths))
        for widths, _ in measurements
    ]
    coefficients, intercept = _nonnegative_fit(np.array(rows), [ms for _, ms in measurements])
    return LatencyModel(features, coefficients, intercept, threads=threads, runtime=runtime)


def _default_groups(graph):
    return [group.name for group in graph.groups if group.prunable]


def write_latency_samples(model, directory, samples=24, groups=None, seed=0, round_to=8):
    """Writes pruned copies of `model` as `.tflite` files for timing on another device.

    Each copy keeps the widths of one `sample_widths` combination (channels
    kept by L1 norm: which ones does not change the time). `manifest.json`
    lists each file with its widths; time every file with the LiteRT
    benchmark tool on the phone (`benchmark_model --graph=FILE
    --num_threads=N`, its "avg" in microseconds / 1000), then pass
    `[(widths, milliseconds), ...]` to `fit_latency_model`.

    Args:
        model: A built Sequential or functional `keras.Model`. Not modified.
        directory: String or path-like; created if missing.
        samples: Int >= 3. Number of copies (the full model included).
        groups: Group names to vary. Defaults to every prunable group.
        seed: Int. Random seed of the widths.
        round_to: Positive int. Widths are multiples of it.

    Returns:
        List of `(path, widths)`, also written to `directory/manifest.json`.

    Raises:
        ValueError: If `samples` < 3, a group is unknown or not prunable, or
            the model cannot be exported (as `tfprune.export.to_tflite`).

    Example:

    >>> files = tfprune.latency.write_latency_samples(model, "latency-samples")  # doctest: +SKIP
    """
    from tfprune import graph as graph_module
    from tfprune import surgery
    from tfprune.export import to_tflite

    if not isinstance(samples, int) or samples < 3:
        raise ValueError(f"`samples` must be an int of at least 3. Received: samples={samples!r}")
    graph = graph_module.build(model)
    names = list(groups) if groups is not None else _default_groups(graph)
    for name in names:
        if name not in {group.name for group in graph.groups}:
            raise ValueError(f"Group '{name}' is not a channel group of model '{model.name}'.")
        if not graph[name].prunable:
            raise ValueError(
                f"Group '{name}' of model '{model.name}' cannot be pruned: {graph[name].reason}"
            )
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for index, widths in enumerate(
        sample_widths({name: graph[name].size for name in names}, samples, seed, round_to=round_to)
    ):
        pruned = model if index == 0 else surgery.set_widths(model, widths)
        path = directory / f"sample_{index:03d}.tflite"
        to_tflite(pruned, path, verify=False, verbose=False)
        written.append((str(path), widths))
    manifest = {
        "model": model.name,
        "samples": [{"file": os.path.basename(path), "widths": widths} for path, widths in written],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return written


def measure_latency_model(
    model, samples=24, threads=1, groups=None, seed=0, runs=30, warmup=5, directory=None
):
    """Times pruned copies of `model` on LiteRT here and fits a `LatencyModel` to them.

    The copies (`write_latency_samples`) are timed interleaved in one
    process (`tfprune.export.compare_latency`: every round invokes each file
    once), so that the load of a shared machine falls on all of them alike.

    Args:
        model: A built Sequential or functional `keras.Model`. Not modified.
        samples: Int >= 3. Copies timed (the full model included). Defaults to 24.
        threads: Positive int. Interpreter threads. Defaults to 1.
        groups: Group names to vary. Defaults to every prunable group.
        seed: Int. Random seed of the widths.
        runs, warmup: Timed and untimed rounds, as in `compare_latency`.
        directory: Where to keep the `.tflite` files; a temporary directory
            (removed afterwards) by default.

    Returns:
        A `LatencyModel`; its `measurements` attribute holds the
        `(widths, milliseconds)` it was fitted to.

    Raises:
        ValueError: As `write_latency_samples` and `compare_latency`.

    Example:

    >>> latency = tfprune.latency.measure_latency_model(model, samples=12)  # doctest: +SKIP
    """
    from tfprune.export import compare_latency

    with tempfile.TemporaryDirectory() as scratch:
        written = write_latency_samples(model, directory or scratch, samples, groups, seed)
        times = compare_latency(
            {path: path for path, _ in written}, threads=threads, runs=runs, warmup=warmup
        )
    measurements = [(widths, times[path]) for path, widths in written]
    names = list(written[0][1])
    latency = fit_latency_model(
        model, measurements, groups=names, threads=threads, runtime=_runtime()
    )
    latency.measurements = measurements
    return latency


def _runtime():
    import platform

    try:
        from importlib.metadata import version

        litert = f"ai-edge-litert {version('ai-edge-litert')}"
    except Exception:  # noqa: BLE001 - only a label
        litert = "LiteRT"
    return f"{litert}, default CPU delegate (XNNPACK), {platform.machine()}"
