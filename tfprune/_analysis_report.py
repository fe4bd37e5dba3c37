"""The records `tfprune.analyze` returns: a `LayerRecord` per layer, an `Analysis` with the totals.

The figures are plain data (JSON-serialisable through `to_dict`); printing
an `Analysis` gives a table like Keras's model summary, with the totals, and
says when some layers' MACs could not be counted.
"""

import dataclasses
import json

__all__ = ["Analysis", "LayerRecord"]


@dataclasses.dataclass(frozen=True)
class LayerRecord:
    """Figures for one layer or graph operation of an analysed model.

    Args:
        name: String. The layer name; layers of a nested model are prefixed
            with the nested model's name and a slash (`"backbone/conv1"`).
        type: String. The class name (`"Conv2D"`, `"Multiply"` for `x * y`).
        output_shape: Tuple (or list of tuples for several outputs) of the
            layer's first call in the graph, batch dimension included.
        params: Int. Number of weights of the layer (0 for graph operations).
        trainable_params: Int. Number of trainable weights.
        macs: Int or None. Kernel multiply-accumulates per example, summed
            over all calls of the layer in the graph; None when they cannot be
            counted (no registered formula, or unknown spatial size).
        kernel_params: Int. Number of entries in the layer's kernels (weights
            whose name ends in `kernel`), 0 when it has none.
        nonzero_kernel_params: Int. How many of those are not exactly zero.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs))
    >>> tfprune.analyze(model)["logits"].macs
    8
    """

    name: str
    type: str
    output_shape: object
    params: int
    trainable_params: int
    macs: object
    kernel_params: int
    nonzero_kernel_params: int

    @property
    def flops(self):
        """Int or None. 2 x MACs (one multiply and one add per MAC)."""
        return None if self.macs is None else 2 * self.macs

    @property
    def kernel_sparsity(self):
        """Float or None. Share of exact zeros in the kernels; None without a kernel."""
        return _sparsity(self.kernel_params, self.nonzero_kernel_params)

    def to_dict(self):
        """Returns the record as a JSON-serialisable dict (shapes as lists).

        Returns:
            Dict with the fields plus `flops` and `kernel_sparsity`.

        Example:

        >>> record = LayerRecord("d", "Dense", (None, 2), 10, 10, 8, 8, 8)
        >>> record.to_dict()["flops"]
        16
        """
        result = dataclasses.asdict(self)
        result["output_shape"] = _shape_to_list(self.output_shape)
        result["flops"] = self.flops
        result["kernel_sparsity"] = self.kernel_sparsity
        return result


@dataclasses.dataclass(frozen=True)
class Analysis:
    """Per-layer records and totals returned by `tfprune.analyze`.

    MACs count kernel multiply-accumulates of convolution and dense layers
    (and the products of activations in attention) for one example, of
    `sequence_length` tokens when that is set; FLOPs (2xMACs) are twice that.
    Normalization, activations, pooling, elementwise operations and embedding
    lookups are excluded (see the module docstring).

    Args:
        model_name: String. The analysed model's name.
        layers: Tuple of `LayerRecord`, in graph order.
        sequence_length: Int or None. The length the model's unknown input
            axes were given (see `tfprune.analyze`); None when its inputs have
            none, or no length was known. Defaults to None.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((8, 8, 3))
    >>> outputs = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    >>> analysis = tfprune.analyze(keras.Model(inputs, outputs))
    >>> analysis.macs, analysis.flops, analysis.params
    (6912, 13824, 112)
    >>> text = analysis.to_json()
    """

    model_name: str
    layers: tuple
    sequence_length: object = None

    def __getitem__(self, name):
        for record in self.layers:
            if record.name == name:
                return record
        raise KeyError(
            f"Model '{self.model_name}' has no layer named {name!r}; "
            f"known names: {[record.name for record in self.layers]}."
        )

    @property
    def params(self):
        """Int. Total number of weights."""
        return sum(record.params for record in self.layers)

    @property
    def trainable_params(self):
        """Int. Total number of trainable weights."""
        return sum(record.trainable_params for record in self.layers)

    @property
    def complete(self):
        """Bool. True when every layer's MACs were counted (`uncounted_layers` is empty).

        When False, `macs` and `flops` are lower bounds: they leave out the
        layers named in `uncounted_layers`.

        Example:

        >>> import keras, tfprune
        >>> inputs = keras.Input((3,))
        >>> tfprune.analyze(keras.Model(inputs, keras.layers.Dense(2)(inputs))).complete
        True
        """
        return not self.uncounted_layers

    @property
    def macs(self):
        """Int. Kernel multiply-accumulates per example of the layers that could be counted.

        A lower bound when `complete` is False.
        """
        return sum(record.macs for record in self.layers if record.macs is not None)

    @property
    def flops(self):
        """Int. 2 x `macs`."""
        return 2 * self.macs

    @property
    def kernel_params(self):
        """Int. Total number of kernel entries."""
        return sum(record.kernel_params for record in self.layers)

    @property
    def nonzero_kernel_params(self):
        """Int. Total number of kernel entries that are not exactly zero."""
        return sum(record.nonzero_kernel_params for record in self.layers)

    @property
    def kernel_sparsity(self):
        """Float or None. Share of exact zeros over all kernels."""
        return _sparsity(self.kernel_params, self.nonzero_kernel_params)

    @property
    def uncounted_layers(self):
        """Tuple of layer names whose MACs are unknown (left out of `macs`)."""
        return tuple(record.name for record in self.layers if record.macs is None)

    def to_dict(self):
        """Returns the analysis as a JSON-serialisable dict.

        Returns:
            Dict with `model`, `sequence_length`, `layers` (a list of `LayerRecord.to_dict()`),
            `totals` (with `complete`: False when some layers' MACs are
            unknown and the MAC totals are lower bounds) and `uncounted_layers`.

        Example:

        >>> import keras, tfprune
        >>> inputs = keras.Input((3,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        >>> tfprune.analyze(model).to_dict()["totals"]["flops"]
        12
        """
        return {
            "model": self.model_name,
            "mac_convention": (
                "MACs: kernel multiply-accumulates of conv/dense layers and products of "
                "activations in attention and matmul/einsum, per example (of sequence_length "
                "tokens when set); FLOPs = 2 x MACs; normalization, activation, pooling, "
                "elementwise ops and embedding lookups excluded"
            ),
            "sequence_length": self.sequence_length,
            "layers": [record.to_dict() for record in self.layers],
            "totals": {
                "params": self.params,
                "trainable_params": self.trainable_params,
                "macs": self.macs,
                "flops": self.flops,
                "kernel_params": self.kernel_params,
                "nonzero_kernel_params": self.nonzero_kernel_params,
                "kernel_sparsity": self.kernel_sparsity,
                "complete": self.complete,
            },
            "uncounted_layers": list(self.uncounted_layers),
        }

    def to_json(self, indent=2):
        """Returns `to_dict()` as a JSON string.

        Args:
            indent: Int or None. Passed to `json.dumps`. Defaults to 2.

        Returns:
            String.

        Example:

        >>> import json, keras, tfprune
        >>> inputs = keras.Input((3,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(inputs))
        >>> json.loads(tfprune.analyze(model).to_json())["layers"][1]["name"]
        'logits'
        """
        return json.dumps(self.to_dict(), indent=indent)

    def __repr__(self):
        return (
            f"Analysis(model={self.model_name!r}, layers={len(self.layers)}, "
            f"params={self.params}, macs={self.macs})"
        )

    def __str__(self):
        header = (
            "Name",
            "Type",
            "Output shape",
            "Params",
            "MACs",
            "FLOPs (2xMACs)",
            "Kernel sparsity",
        )
        rows = [
            (
                record.name,
                record.type,
                str(record.output_shape),
                f"{record.params:,}",
                _format_count(record.macs),
                _format_count(record.flops),
                _format_share(record.kernel_sparsity),
            )
            for record in self.layers
        ]
        widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]

        def line(row):
            # Text columns left-aligned, numbers right-aligned.
            cells = [
                cell.ljust(width) if column < 3 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths))
            ]
            return "  ".join(cells).rstrip()

        rule = "-" * len(line(header))
        lines = [f"Model: {self.model_name}", rule, line(header), rule, *map(line, rows), rule]
        lines += [
            f"Params: {_human(self.params)}, trainable: {self.trainable_params:,}",
            f"MACs: {_human(self.macs)}, conv and dense kernels and attention, per example"
            + ("" if self.sequence_length is None else f" of {self.sequence_length} tokens"),
            f"FLOPs (2xMACs): {_human(self.flops)}",
            f"Kernel params: {self.kernel_params:,}, nonzero: {self.nonzero_kernel_params:,} "
            f"(sparsity {_format_share(self.kernel_sparsity)})",
        ]
        if self.uncounted_layers:
            lines.append(
                f"INCOMPLETE: MACs and FLOPs above leave out {len(self.uncounted_layers)} layer(s) "
                f"whose MACs are unknown: {', '.join(self.uncounted_layers)}"
            )
            if self.sequence_length is None and any(
                record.type == "InputLayer" and None in record.output_shape[1:]
                for record in self.layers
            ):
                lines.append(
                    "The inputs have an axis of unknown size: tfprune.analyze(model, "
                    "sequence_length=...) counts the layers over it at that length."
                )
        return "\n".join(lines)


def _sparsity(kernel_params, nonzero_kernel_params):
    if kernel_params == 0:
        return None
    return 1.0 - nonzero_kernel_params / kernel_params


def _shape_to_list(shape):
    if isinstance(shape, tuple):
        return list(shape)
    return [list(item) for item in shape]


def _format_count(value):
    return "?" if value is None else f"{value:,}"


def _format_share(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def _human(value):
    """Formats 3896 as "3,896 (3.90 K)" and 122 as "122"."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= factor:
            return f"{value:,} ({value / factor:.2f} {suffix})"
    return f"{value:,}"
