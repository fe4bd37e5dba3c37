"""`prune(..., latency=...)`: the rate whose widths meet a LiteRT latency budget.

The widths come from the same rule as a rate (the criterion's ranking, the
guards, `round_to`): the budget only chooses the rate, by bisection on the
latency model's prediction, so a latency budget prunes like a rate that
happens to land on the target instead of on a MACs share.
"""

import re
import tempfile

import numpy as np

from tfprune._utils import is_number

_MILLISECONDS = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*ms\s*$")
_STEPS = 30  # bisection steps: the rate to about 1e-9, far below one channel


def check_latency(latency, latency_model, rate, threshold):
    """Validates the latency arguments; returns `(share, milliseconds)` (one of them None).

    Raises:
        ValueError: If `latency` is neither a share in (0, 1] nor a string
            such as "8ms", is given with `rate` or `threshold`, or milliseconds
            are given without a `latency_model`.
        TypeError: If `latency_model` is not a `tfprune.latency.LatencyModel`.
    """
    from tfprune.latency import LatencyModel

    if latency_model is not None and not isinstance(latency_model, LatencyModel):
        raise TypeError(
            "`latency_model` must be a tfprune.latency.LatencyModel (from measure_latency_model, "
            f"fit_latency_model or LatencyModel.load). Received: an object of type {type(latency_model).__name__}"
        )
    if latency is None:
        if latency_model is not None:
            raise ValueError("`latency_model` is used with a latency budget: pass `latency=` (e.g. 0.6) too.")
        return None, None
    if rate is not None or threshold is not None:
        raise ValueError(
            "Give a latency budget or a rate/threshold, not both: the budget chooses the rate. "
            f"Received: latency={latency!r}, rate={rate!r}, threshold={threshold!r}"
        )
    if isinstance(latency, str):
        match = _MILLISECONDS.match(latency)
        if match is None or float(match.group(1)) <= 0:
            raise ValueError(f"`latency` in milliseconds is written like '8ms'. Received: latency={latency!r}")
        if latency_model is None:
            raise ValueError(
                f"latency={latency!r} is in milliseconds of a particular device: pass the `latency_model` "
                "measured on it (tfprune.latency.fit_latency_model or LatencyModel.load), or give a share "
                "of the dense latency such as latency=0.6."
            )
        return None, float(match.group(1))
    if not is_number(latency) or not 0 < latency <= 1:
        raise ValueError(
            "`latency` must be a share of the dense model's latency in (0, 1], e.g. 0.6, or milliseconds "
            f"such as '8ms'. Received: latency={latency!r}"
        )
    return float(latency), None


def rate_for_latency(widths_at, latency_model, target_ms, max_rate=0.99, grid=100):
    """The smallest rate whose widths the latency model predicts at or under `target_ms`.

    A scan of `grid` rates from 0 to `max_rate`, then bisection between the
    last rate over the target and the first under it. `widths_at` may return
    None for a rate the pruning rule refuses (a global ranking that would
    empty a group): such rates count as over the target.

    Args:
        widths_at: Callable `rate -> {group name: width}` (only shrunk groups) or None.
        latency_model: A `LatencyModel` covering those groups.
        target_ms: Float.
        max_rate: Float. The largest rate tried.
        grid: Int. Rates scanned.

    Returns:
        `(rate, predicted milliseconds)`.

    Raises:
        ValueError: If no rate up to `max_rate` reaches `target_ms`.

    Example:

    >>> class Line:  # 10 ms at rate 0, 2 ms at rate 0.99
    ...     def of_widths(self, widths):
    ...         return 10 - 8 * widths["r"] / 0.99
    >>> rate, ms = rate_for_latency(lambda rate: {"r": rate}, Line(), 6.0)
    >>> round(rate, 4), round(ms, 4)
    (0.495, 6.0)
    """

    def predicted(rate):
        widths = widths_at(rate)
        return np.inf if widths is None else latency_model.of_widths(widths)

    rates = np.linspace(0.0, float(max_rate), grid)
    times = [predicted(rate) for rate in rates]
    under = [index for index, value in enumerate(times) if value <= target_ms]
    if not under:
        lowest = min(times)
        raise ValueError(
            f"The latency budget ({target_ms:.3g} ms) is unreachable by pruning the targeted groups: the "
            f"lowest predicted latency is {lowest:.3g} ms, {lowest / latency_model.total:.2f} of the dense "
            f"{latency_model.total:.3g} ms (the layers no targeted group changes take the rest). Raise "
            "`latency` or target more groups."
        )
    first = under[0]
    if first == 0:
        return 0.0, times[0]
    low, high, at_high = rates[first - 1], rates[first], times[first]
    for _ in range(_STEPS):
        middle = (low + high) / 2
        value = predicted(middle)
        if value <= target_ms:
            high, at_high = middle, value
        else:
            low = middle
    return float(high), float(at_high)


def check_coverage(latency_model, group_names, model_name):
    """Raises when the latency model does not vary a group the budget may shrink."""
    missing = [name for name in group_names if name not in set(latency_model.names)]
    if missing:
        raise ValueError(
            f"The latency model does not cover group(s) {missing[:5]} of model '{model_name}' that the "
            "budget may shrink: fit it over the same groups (tfprune.latency.measure_latency_model(model, "
            "groups=...)) or narrow `targets`/`skip`."
        )


def measured_latency(dense, pruned, threads, runs=30):
    """`(dense ms, pruned ms)`: both exported and timed interleaved on LiteRT here."""
    from tfprune.export import compare_latency, to_tflite

    with tempfile.TemporaryDirectory() as directory:
        paths = {"dense": f"{directory}/dense.tflite", "pruned": f"{directory}/pruned.tflite"}
        to_tflite(dense, paths["dense"], verify=False, verbose=False)
        to_tflite(pruned, paths["pruned"], verify=False, verbose=False)
        times = compare_latency(paths, threads=threads, runs=runs)
    return times["dense"], times["pruned"]


def report(target_ms, predicted_ms, latency_model, measured=None):
    """The `PruneResult.latency` dict.

    Example:

    >>> class Model:
    ...     total, threads = 10.0, 1
    >>> report(5.0, 4.8, Model(), measured=(9.0, 5.0))["prediction_error"]
    -0.04
    """
    result = {
        "target_ms": float(target_ms),
        "predicted_ms": float(predicted_ms),
        "dense_predicted_ms": float(latency_model.total),
        "threads": int(latency_model.threads),
        "measured_ms": None,
        "dense_measured_ms": None,
        "prediction_error": None,
        "measured_share": None,
    }
    if measured is not None:
        dense_ms, pruned_ms = measured
        result.update(
            measured_ms=float(pruned_ms),
            dense_measured_ms=float(dense_ms),
            prediction_error=float(np.round(predicted_ms / pruned_ms - 1, 12)),
            measured_share=float(pruned_ms / dense_ms),
        )
    return result
