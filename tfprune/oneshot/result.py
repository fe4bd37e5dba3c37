"""`OneShotResult`: what `tfprune.oneshot.prune` did to each layer."""

import dataclasses

__all__ = ["OneShotResult"]


@dataclasses.dataclass
class OneShotResult:
    """Per-layer sparsity and reconstruction error of a one-shot pruning, as data.

    `print(result)` shows a table. Each record of `layers` is a dict with
    `name` (qualified: `"outer/inner/name"` for a layer inside another),
    `class_name`, `parameters` (kernel weights), `zeros` (exact zeros after
    pruning), `sparsity`, `error` (`||XW - XW'|| / ||XW||` on the rows `X`
    the layer read from the calibration data, its preceding layers already
    pruned; None without data) and `rows` (how many rows `X` has).

    Attributes:
        method: String. `"magnitude"`, `"wanda"` or `"sparsegpt"`.
        sparsity: Float or None. The requested sparsity.
        m_by_n: Tuple `(m, n)` or None. The requested M:N pattern.
        layers: List of dicts, one per pruned layer, in the order they were pruned.

    Example:

    >>> from tfprune.oneshot import OneShotResult
    >>> result = OneShotResult("magnitude", 0.5, None, [
    ...     {"name": "dense", "class_name": "Dense", "parameters": 8, "zeros": 4,
    ...      "sparsity": 0.5, "error": None, "rows": 0}])
    >>> result.global_sparsity
    0.5
    """

    method: str
    sparsity: float
    m_by_n: tuple
    layers: list

    @property
    def global_sparsity(self):
        """Float. Share of the pruned layers' kernel weights that are exactly zero."""
        parameters = sum(record["parameters"] for record in self.layers)
        return sum(record["zeros"] for record in self.layers) / max(parameters, 1)

    @property
    def errors(self):
        """Dict `{layer name: reconstruction error or None}`."""
        return {record["name"]: record["error"] for record in self.layers}

    def __str__(self):
        target = f"{self.m_by_n[0]}:{self.m_by_n[1]}" if self.m_by_n else f"{self.sparsity:.0%}"
        width = max([len(record["name"]) for record in self.layers] + [5]) + 2
        header = f"{'layer':<{width}}{'type':<13}{'params':>10}{'zeros':>10}{'sparsity':>10}{'error':>10}"
        lines = [f"one-shot {self.method} pruning at {target}", header, "-" * len(header)]
        for record in self.layers:
            error = "-" if record["error"] is None else f"{record['error']:.4f}"
            lines.append(
                f"{record['name']:<{width}}{record['class_name']:<13}{record['parameters']:>10}"
                f"{record['zeros']:>10}{record['sparsity']:>10.1%}{error:>10}"
            )
        lines.append("-" * len(header))
        total = sum(record["parameters"] for record in self.layers)
        zeros = sum(record["zeros"] for record in self.layers)
        lines.append(f"{'total':<{width + 13}}{total:>10}{zeros:>10}{self.global_sparsity:>10.1%}")
        return "\n".join(lines)
