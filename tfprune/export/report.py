"""The reports `tfprune.export.to_tflite` and `tfprune.export.benchmark` return."""

import dataclasses

__all__ = ["BenchmarkReport", "ExportReport"]


def _format_bytes(size):
    return f"{size / 1024:.1f} KiB"


def _format_table(title, rows):
    width = max(len(name) for name, _ in rows)
    return "\n".join([title] + [f"  {name.ljust(width)}  {value}" for name, value in rows])


class _Report:
    """What the two report dataclasses share."""

    def to_dict(self):
        """Returns the report as a dict of JSON-compatible values.

        Returns:
            Dict with one entry per field (nested dicts and lists for the
            tensors, ops and latencies); `json.dumps` accepts it as it is.

        Example:

        >>> json.dumps(report.to_dict())  # doctest: +SKIP
        """
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ExportReport(_Report):
    """What `to_tflite` wrote and how closely the file matches the Keras model.

    Args:
        path: String. The `.tflite` file written.
        quantize: The `quantize` mode used (None, "dynamic", "float16", "int8").
        sparse: Bool. Whether the converter's sparsity encoding was on.
        size_bytes: Int. Size of the file.
        gzip_size_bytes: Int. Size of the file compressed with gzip (level 9),
            a proxy for the download size of an app.
        ops: Dict. TFLite op name -> number of nodes using it.
        inputs: List of dicts (`name`, `shape`, `dtype`, `scale`, `zero_point`)
            describing the file's input tensors; `shape` has -1 for dynamic
            dimensions.
        outputs: List of dicts describing the output tensors, same fields.
        dense_size_bytes: Int or None. With `sparse=True`, the size of the same
            conversion without the sparsity encoding.
        max_abs_error: Float or None. Largest absolute difference between the
            LiteRT outputs and the Keras model's on the verification samples
            (None when `verify=False`).
        top1_agreement: Float or None. Fraction of verification samples whose
            arg-max class agrees between LiteRT and Keras, for outputs of shape
            `(batch, classes)` (the lowest over such outputs); None otherwise.
        num_samples: Int. Number of verification samples.
        xnnpack: Bool or None. Whether the file runs with LiteRT's default
            XNNPACK delegate; if it does not (e.g. sparse quantized weights),
            verification used the built-in kernels.

    Example:

    >>> report = tfprune.export.to_tflite(model, "model.tflite")  # doctest: +SKIP
    >>> report.size_bytes, report.max_abs_error  # doctest: +SKIP
    (14488, 7.4e-09)
    >>> print(report)  # doctest: +SKIP
    """

    path: str
    quantize: str | None
    sparse: bool
    size_bytes: int
    gzip_size_bytes: int
    ops: dict
    inputs: list
    outputs: list
    dense_size_bytes: int | None = None
    max_abs_error: float | None = None
    top1_agreement: float | None = None
    num_samples: int = 0
    xnnpack: bool | None = None

    def __str__(self):
        rows = [
            ("quantize", self.quantize or "none (float32)"),
            (
                "size",
                f"{_format_bytes(self.size_bytes)} (gzip {_format_bytes(self.gzip_size_bytes)})",
            ),
        ]
        if self.dense_size_bytes is not None:
            gain = self.dense_size_bytes / self.size_bytes
            rows.append(
                (
                    "sparse encoding",
                    f"{gain:.2f}x smaller than {_format_bytes(self.dense_size_bytes)}",
                )
            )
        if self.max_abs_error is not None:
            rows.append(
                ("max abs error", f"{self.max_abs_error:.3g} on {self.num_samples} samples")
            )
        if self.top1_agreement is not None:
            rows.append(("top-1 agreement", f"{100 * self.top1_agreement:.2f} %"))
        if self.xnnpack is not None:
            rows.append(("XNNPACK", "yes" if self.xnnpack else "no (built-in kernels)"))
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            for tensor in tensors:
                rows.append((kind, f"{tensor['name']} {tensor['shape']} {tensor['dtype']}"))
        rows.append(("ops", ", ".join(f"{name} x{count}" for name, count in self.ops.items())))
        return _format_table(f"TFLite file {self.path}", rows)


@dataclasses.dataclass
class BenchmarkReport(_Report):
    """LiteRT latency and memory of one `.tflite` file, from `benchmark`.

    Args:
        path: String. The file measured.
        delegate: String. "xnnpack" (LiteRT's default CPU delegate) or
            "builtin" when the file cannot run with XNNPACK.
        input_shapes: List of lists. Shapes fed to the interpreter (dynamic
            dimensions set to 1).
        runs: Int. Timed invocations per thread count.
        warmup: Int. Untimed invocations before timing.
        latency: List of dicts, one per thread count: `threads`, `median_ms`,
            `min_ms`, `max_ms`.
        peak_rss_bytes: Int or None. Peak resident memory of a fresh Python
            process that loaded the interpreter and ran the model once (Linux
            only; None elsewhere).
        model_rss_bytes: Int or None. The part of that peak added by loading
            and running the model (peak minus the resident memory after importing
            `ai_edge_litert`).

    Example:

    >>> report = tfprune.export.benchmark("model.tflite", threads=(1,))  # doctest: +SKIP
    >>> report.latency[0]["median_ms"]  # doctest: +SKIP
    0.05
    """

    path: str
    delegate: str
    input_shapes: list
    runs: int
    warmup: int
    latency: list
    peak_rss_bytes: int | None = None
    model_rss_bytes: int | None = None

    def __str__(self):
        rows = [("delegate", self.delegate), ("input shapes", str(self.input_shapes))]
        for entry in self.latency:
            rows.append(
                (
                    f"{entry['threads']} thread(s)",
                    f"median {entry['median_ms']:.3f} ms, min {entry['min_ms']:.3f} ms, "
                    f"max {entry['max_ms']:.3f} ms ({self.runs} runs)",
                )
            )
        if self.peak_rss_bytes is not None:
            rows.append(
                (
                    "peak memory",
                    f"{self.peak_rss_bytes / 2**20:.1f} MiB "
                    f"(model: {self.model_rss_bytes / 2**20:.1f} MiB)",
                )
            )
        return _format_table(f"LiteRT benchmark {self.path}", rows)
