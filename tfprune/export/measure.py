"""LiteRT latency and peak memory of a `.tflite` file."""

import os
import subprocess
import sys
import time

import numpy as np

from tfprune.export.report import BenchmarkReport
from tfprune.export.verify import _interpreter


def benchmark(path, threads=(1, 2), runs=50, warmup=5):
    """Measures LiteRT latency and peak memory of a `.tflite` file.

    For each thread count a fresh interpreter with LiteRT's default CPU
    delegate (XNNPACK; the built-in kernels if XNNPACK refuses the file) is fed
    one fixed random input (uniform [0, 1) floats, zeros for integer inputs;
    dynamic dimensions set to 1), invoked `warmup` times, then timed over
    `runs` invocations. Peak memory is measured in a fresh Python process that
    only imports `ai_edge_litert`, loads the file and runs it once.

    Args:
        path: String or path-like. The `.tflite` file.
        threads: Tuple of positive ints. Thread counts to measure. Defaults to
            `(1, 2)`.
        runs: Positive int. Timed invocations per thread count. Defaults to 50.
        warmup: Non-negative int. Untimed invocations first. Defaults to 5.

    Returns:
        A `BenchmarkReport` with median/min/max milliseconds per thread count
        and the peak resident memory (None except on Linux).

    Raises:
        TypeError: If `path` is not a path.
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not a TFLite model, or `threads`, `runs` or
            `warmup` are out of range.

    Example:

    >>> report = tfprune.export.benchmark("model.tflite", threads=(1, 2), runs=20)  # doctest: +SKIP
    >>> print(report)  # doctest: +SKIP
    """
    threads = tuple(threads) if isinstance(threads, (tuple, list)) else (threads,)
    if not threads or not all(_is_int(count) and count >= 1 for count in threads):
        raise ValueError(
            f"`threads` must be a tuple of positive ints such as (1, 2). Received: threads={threads!r}"
        )
    if not _is_int(runs) or runs < 1:
        raise ValueError(f"`runs` must be a positive int such as 50. Received: runs={runs!r}")
    if not _is_int(warmup) or warmup < 0:
        raise ValueError(
            f"`warmup` must be a non-negative int such as 5. Received: warmup={warmup!r}"
        )
    use_xnnpack = True
    latency = []
    for count in threads:
        interpreter, use_xnnpack = _ready_interpreter(path, count)
        for _ in range(warmup):
            interpreter.invoke()
        milliseconds = []
        for _ in range(runs):
            start = time.perf_counter()
            interpreter.invoke()
            milliseconds.append(1000 * (time.perf_counter() - start))
        latency.append(
            {
                "threads": count,
                "median_ms": float(np.median(milliseconds)),
                "min_ms": float(np.min(milliseconds)),
                "max_ms": float(np.max(milliseconds)),
            }
        )
    peak, model_memory = _peak_memory(os.fspath(path), max(threads), use_xnnpack)
    return BenchmarkReport(
        path=os.fspath(path),
        delegate="xnnpack" if use_xnnpack else "builtin",
        input_shapes=[details["shape"].tolist() for details in interpreter.get_input_details()],
        runs=runs,
        warmup=warmup,
        latency=latency,
        peak_rss_bytes=peak,
        model_rss_bytes=model_memory,
    )


def compare_latency(paths, threads=1, runs=50, warmup=5):
    """Median LiteRT latency of several `.tflite` files, invocations interleaved.

    On a shared machine the load changes from second to second, so files timed
    one after the other are timed under different conditions. Here each round
    invokes every file once, in the order given, and each file's median is
    over the same rounds: the ratios between the files are what to quote.
    Each file gets its own interpreter with LiteRT's default CPU delegate
    (XNNPACK, the built-in kernels if XNNPACK refuses it) and one fixed random
    input, as in `benchmark`.

    Args:
        paths: Dict mapping a name of your choice to a `.tflite` path.
        threads: Positive int. Threads of every interpreter. Defaults to 1.
        runs: Positive int. Rounds timed. Defaults to 50.
        warmup: Non-negative int. Untimed rounds first. Defaults to 5.

    Returns:
        Dict mapping each name to its median milliseconds per invocation.

    Raises:
        TypeError: If `paths` is not a non-empty dict.
        FileNotFoundError: If a file does not exist.
        ValueError: If a file is not a TFLite model, or `threads`, `runs` or
            `warmup` are out of range.

    Example:

    >>> tfprune.export.compare_latency({"dense": "dense.tflite", "pruned": "pruned.tflite"})  # doctest: +SKIP
    {'dense': 0.85, 'pruned': 0.46}
    """
    if not isinstance(paths, dict) or not paths:
        raise TypeError(
            "`paths` must be a non-empty dict {name: .tflite path}, e.g. "
            "{'dense': 'dense.tflite', 'pruned': 'pruned.tflite'}. "
            f"Received: an object of type {type(paths).__name__}"
        )
    if not _is_int(threads) or threads < 1:
        raise ValueError(f"`threads` must be a positive int such as 1. Received: threads={threads!r}")
    if not _is_int(runs) or runs < 1:
        raise ValueError(f"`runs` must be a positive int such as 50. Received: runs={runs!r}")
    if not _is_int(warmup) or warmup < 0:
        raise ValueError(
            f"`warmup` must be a non-negative int such as 5. Received: warmup={warmup!r}"
        )
    interpreters = {name: _ready_interpreter(path, threads)[0] for name, path in paths.items()}
    for _ in range(warmup):
        for interpreter in interpreters.values():
            interpreter.invoke()
    milliseconds = {name: [] for name in interpreters}
    for _ in range(runs):
        for name, interpreter in interpreters.items():
            start = time.perf_counter()
            interpreter.invoke()
            milliseconds[name].append(1000 * (time.perf_counter() - start))
    return {name: float(np.median(values)) for name, values in milliseconds.items()}


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _ready_interpreter(path, num_threads):
    """Returns an interpreter that has run once on a random input, and whether it uses XNNPACK."""
    try:
        return _run_once(_interpreter(path, num_threads, use_xnnpack=True)), True
    except RuntimeError:  # XNNPACK refuses some files (sparse int8 weights) when first invoked
        return _run_once(_interpreter(path, num_threads, use_xnnpack=False)), False


def _run_once(interpreter):
    interpreter.allocate_tensors()
    random = np.random.default_rng(0)
    for details in interpreter.get_input_details():
        dtype = np.dtype(details["dtype"])
        if np.issubdtype(dtype, np.floating):
            values = random.uniform(0.0, 1.0, size=details["shape"]).astype(dtype)
        else:
            values = np.zeros(details["shape"], dtype)
        interpreter.set_tensor(details["index"], values)
    interpreter.invoke()
    return interpreter


# Runs in a fresh process so that the peak resident memory is the interpreter's,
# not TensorFlow's. Linux only: it reads the peak (VmHWM) of this process's own
# memory from /proc; `resource.getrusage` would report the parent's peak, which
# survives fork and exec.
_MEMORY_PROBE = """
import sys
from ai_edge_litert.interpreter import Interpreter, OpResolverType

def status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])

with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")  # restart the peak from the current resident memory
before = status_kib("VmRSS")
interpreter = Interpreter(
    model_path=sys.argv[1],
    num_threads=int(sys.argv[2]),
    experimental_op_resolver_type=OpResolverType[sys.argv[3]],
)
interpreter.allocate_tensors()
interpreter.invoke()
peak = status_kib("VmHWM")
print(1024 * peak, 1024 * (peak - before))
"""


def _peak_memory(path, num_threads, use_xnnpack):
    """Returns (peak RSS bytes, RSS bytes added by the model), or (None, None)."""
    resolver = "AUTO" if use_xnnpack else "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    try:
        result = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, path, str(num_threads), resolver],
            capture_output=True,
            text=True,
            timeout=300,
        )
        peak, added = (int(value) for value in result.stdout.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None, None  # not Linux (no /proc), or the probe failed
    return peak, added
