"""LiteRT latency and peak memory of a `.tflite` file."""

import json
import os
import subprocess
import sys
import time

import numpy as np

from tfprune.export.report import BenchmarkReport
from tfprune.export.verify import _interpreter

__all__ = ["benchmark", "compare_latency"]


def benchmark(path, threads=(1, 2), runs=50, warmup=5, input_shapes=None):
    """Measures LiteRT latency and peak memory of a `.tflite` file.

    For each thread count a fresh interpreter with LiteRT's default CPU
    delegate (XNNPACK; the built-in kernels if XNNPACK refuses the file) is fed
    one fixed random input per file input (uniform [0, 1) floats, ones for
    inputs named *mask*, zeros for other integer inputs; a dynamic batch set
    to 1, other dynamic sizes from `input_shapes`), invoked `warmup` times,
    then timed over `runs` invocations. Peak memory is measured in a fresh
    Python process that only imports `ai_edge_litert`, loads the file and
    runs it once on inputs of the same shapes.

    Args:
        path: String or path-like. The `.tflite` file.
        threads: Tuple of positive ints. Thread counts to measure. Defaults to
            `(1, 2)`.
        runs: Positive int. Timed invocations per thread count. Defaults to 50.
        warmup: Non-negative int. Untimed invocations first. Defaults to 5.
        input_shapes: Dict input name -> tuple of sizes without the batch
            axis (a tuple alone for a file with one input), required for
            inputs whose sizes other than the batch are dynamic (a sequence
            length, an image's height and width): latency depends on them.
            Defaults to `None`.

    Returns:
        A `BenchmarkReport` with median/min/max milliseconds per thread count
        and the peak resident memory (None except on Linux).

    Raises:
        TypeError: If `path` is not a path.
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not a TFLite model or cannot run on the
            shapes given, if `threads`, `runs` or `warmup` are out of range,
            or if `input_shapes` is missing for a dynamic size or does not fit
            the file's inputs.

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
    shapes = _fed_shapes(path, input_shapes)
    use_xnnpack = True
    latency = []
    for count in threads:
        interpreter, use_xnnpack = _ready_interpreter(path, count, shapes)
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
    peak, model_memory = _peak_memory(os.fspath(path), max(threads), use_xnnpack, shapes)
    return BenchmarkReport(
        path=os.fspath(path),
        delegate="xnnpack" if use_xnnpack else "builtin",
        input_shapes=[list(shape) for _, shape in shapes.values()],
        runs=runs,
        warmup=warmup,
        latency=latency,
        peak_rss_bytes=peak,
        model_rss_bytes=model_memory,
    )


def compare_latency(paths, threads=1, runs=50, warmup=5, input_shapes=None):
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
        input_shapes: The sizes of dynamic inputs, as in `benchmark`, for
            every file. Defaults to `None`.

    Returns:
        Dict mapping each name to its median milliseconds per invocation.

    Raises:
        TypeError: If `paths` is not a non-empty dict.
        FileNotFoundError: If a file does not exist.
        ValueError: If a file is not a TFLite model, `threads`, `runs` or
            `warmup` are out of range, or `input_shapes` does not fit a file.

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
    interpreters = {
        name: _ready_interpreter(path, threads, _fed_shapes(path, input_shapes))[0]
        for name, path in paths.items()
    }
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


def _fed_shapes(path, input_shapes):
    """Dict signature input name -> (tensor index, shape fed), checked against the file."""
    runner = _interpreter(path, use_xnnpack=False).get_signature_runner()
    details = runner.get_input_details()
    if input_shapes is not None and not isinstance(input_shapes, dict):
        if len(details) != 1:
            raise ValueError(
                f"TFLite file '{os.fspath(path)}' has {len(details)} inputs, {sorted(details)}; pass "
                f"`input_shapes` as a dict input name -> sizes. Received: input_shapes={input_shapes!r}"
            )
        input_shapes = {next(iter(details)): input_shapes}
    input_shapes = input_shapes or {}
    unknown = sorted(set(input_shapes) - set(details))
    if unknown:
        raise ValueError(
            f"`input_shapes` names inputs {unknown} that TFLite file '{os.fspath(path)}' does not "
            f"have; its inputs are {sorted(details)}. Received: input_shapes={input_shapes!r}"
        )
    shapes = {}
    for name, tensor in details.items():
        signature = [int(size) for size in tensor["shape_signature"]]
        batch = 1 if signature[0] == -1 else signature[0]
        sizes = tuple(input_shapes.get(name, signature[1:]))
        fits = len(sizes) == len(signature) - 1 and all(
            _is_int(size) and size >= 1 and (known in (-1, size))
            for known, size in zip(signature[1:], sizes)
        )
        if not fits:
            example = tuple(32 if size == -1 else size for size in signature[1:])
            problem = "has dynamic sizes" if name not in input_shapes else "does not take the sizes given"
            raise ValueError(
                f"Input '{name}' of TFLite file '{os.fspath(path)}' (shape {signature}, -1 dynamic) "
                f"{problem}; pass input_shapes={{'{name}': {example}}} (sizes without the batch "
                f"axis) to time it at sizes you choose. Received: input_shapes={input_shapes or None!r}"
            )
        shapes[name] = (tensor["index"], (batch, *sizes))
    return shapes


def _ready_interpreter(path, num_threads, shapes):
    """Returns an interpreter that has run once on a random input, and whether it uses XNNPACK."""
    try:
        return _run_once(_interpreter(path, num_threads, use_xnnpack=True), shapes), True
    except RuntimeError:  # XNNPACK refuses some files (sparse int8 weights) when first invoked
        pass
    try:
        return _run_once(_interpreter(path, num_threads, use_xnnpack=False), shapes), False
    except RuntimeError as error:
        raise ValueError(
            f"LiteRT cannot run '{os.fspath(path)}' on inputs of shapes "
            f"{ {name: list(shape) for name, (_, shape) in shapes.items()} }: "
            f"{str(error).strip().splitlines()[0]}"
        ) from None


def _run_once(interpreter, shapes):
    for index, shape in shapes.values():
        interpreter.resize_tensor_input(index, shape)
    interpreter.allocate_tensors()
    random = np.random.default_rng(0)
    for details in interpreter.get_input_details():
        dtype = np.dtype(details["dtype"])
        if "mask" in details["name"].lower():
            values = np.ones(details["shape"], dtype)
        elif np.issubdtype(dtype, np.floating):
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
import json
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
for index, shape in json.loads(sys.argv[4]):
    interpreter.resize_tensor_input(index, shape)
interpreter.allocate_tensors()
interpreter.invoke()
peak = status_kib("VmHWM")
print(1024 * peak, 1024 * (peak - before))
"""


def _peak_memory(path, num_threads, use_xnnpack, shapes):
    """Returns (peak RSS bytes, RSS bytes added by the model), or (None, None)."""
    resolver = "AUTO" if use_xnnpack else "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    fed = json.dumps([[int(index), [int(size) for size in shape]] for index, shape in shapes.values()])
    try:
        result = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, path, str(num_threads), resolver, fed],
            capture_output=True,
            text=True,
            timeout=300,
        )
        peak, added = (int(value) for value in result.stdout.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None, None  # not Linux (no /proc), or the probe failed
    return peak, added
