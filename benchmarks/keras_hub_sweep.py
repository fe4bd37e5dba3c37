"""keras-hub sweep: tries `tfprune.prune` on a tiny configuration of every keras-hub model class.

Usage: `.venv/bin/python -m benchmarks.keras_hub_sweep [--only NAME,...] [--json out.json] [--quick]`.

The configurations are `tests/zoo/keras_hub_sweep.py` (randomly initialised,
built offline from the constructors). Each one runs in its own process (at
most `--jobs` at a time, killed after `--timeout` seconds, so a crash or a
hang of one does not stop the sweep), through these steps:

1. build it and run it on its own `sample()`;
2. `tfprune.prune(model, "l1", rate=0.3, targets=entry.targets, verbose=0)`;
   when that refuses, the same call with `unknown="freeze"` (the "freeze"
   column);
3. the fraction of parameters removed; run the pruned model on the sample;
4. save it to `.keras`, reload it, the largest absolute difference between
   the reloaded and the pruned model's outputs;
5. `tfprune.export.to_tflite(...)`: the verified largest error, or the
   refusal.

Outcome per configuration: "pruned" (steps 2-4 passed; the export may still
refuse), "refused" (tfprune raised a ValueError/TypeError/NotImplementedError,
or a subclass such as `tfprune.graph.UnknownOperationError`, from its own
code: a deliberate refusal with a message), "crashed" (any other
exception, in tfprune or below it, a failure of the pruned model to run, save
or reload, a timeout or a dead process) or "build failed" (the configuration
itself is wrong). The JSON keeps, per configuration, the exception type, the
first line of its message, where it was raised, the warnings tfprune gave and,
for crashes, the last frames of the traceback. A markdown table is printed; a
full run (no `--only`, no `--quick`) also writes the `## keras-hub sweep`
section of `benchmarks/RESULTS.md` (`$TFPRUNE_BENCH_RESULTS` if set).
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import traceback

from benchmarks.common import command_line, machine, write_section

SECTION = "## keras-hub sweep"
HERE = pathlib.Path(__file__).resolve().parent
RATE = 0.3
QUICK = ("ResNetBackbone",)
OWN_REFUSALS = (
    ValueError,
    TypeError,
    NotImplementedError,
)  # and subclasses (UnknownOperationError)


def zoo_directory():
    """Returns tests/zoo of this checkout, else of the installed (editable) tfprune's checkout."""
    candidates = [HERE.parent / "tests" / "zoo"]
    try:
        import importlib.util

        spec = importlib.util.find_spec("tfprune")
        if spec and spec.origin:
            candidates.append(pathlib.Path(spec.origin).resolve().parents[1] / "tests" / "zoo")
    except ImportError:
        pass
    for candidate in candidates:
        if (candidate / "keras_hub_sweep.py").exists():
            return candidate
    raise FileNotFoundError(
        f"tests/zoo/keras_hub_sweep.py not found in {[str(c) for c in candidates]}"
    )


def load_configurations():
    """Imports tests/zoo/keras_hub_sweep.py (and the zoo modules it reuses)."""
    directory = str(zoo_directory())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    import keras_hub_sweep

    return keras_hub_sweep


# ---------------------------------------------------------------- worker (one configuration)


def _first_line(error):
    """The first line of the message; Keras's "Exception encountered when calling X" header gets the line after it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return ""
    first = lines[0]
    if first.startswith("Exception encountered when calling") and len(lines) > 1:
        first = f"{first} {lines[1]}"
    return first.replace("\x1b[1m", "").replace("\x1b[0m", "")[:500]


def _raised_at(error):
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    path = frame.filename.replace(os.sep, "/")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    else:
        for marker in ("/tfprune/", "/benchmarks/", "/tests/"):
            if marker in path:
                path = marker[1:] + path.rsplit(marker, 1)[1]
                break
    return f"{path}:{frame.lineno} in {frame.name}"


def _is_own_refusal(error):
    """True when tfprune itself raised a ValueError/TypeError/NotImplementedError (a message, not a bug)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames or not isinstance(error, OWN_REFUSALS):
        return False
    return f"{os.sep}tfprune{os.sep}" in frames[-1].filename


def _describe(error, with_traceback):
    record = {
        "error_type": type(error).__name__,
        "error": _first_line(error),
        "raised_at": _raised_at(error),
    }
    if with_traceback:
        lines = traceback.format_exception(type(error), error, error.__traceback__)
        record["traceback"] = "".join(lines[-8:])[-4000:]
    return record


def _outputs(model, inputs):
    import keras

    return [
        keras.ops.convert_to_numpy(value)
        for value in keras.tree.flatten(model(inputs, training=False))
    ]


def _prune(model, entry, unknown):
    import warnings

    import tfprune

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small, _ = tfprune.prune(
            model, "l1", rate=RATE, targets=entry.targets, verbose=0, unknown=unknown
        )
    messages = []
    for warning in caught:
        line = f"{warning.category.__name__}: {_first_line(warning.message)}"
        if not issubclass(warning.category, DeprecationWarning) and line not in messages:
            messages.append(line)
    return small, messages[:10]


def work(name, out_path):
    """Runs the steps on configuration `name`, rewriting the JSON record at `out_path` after each one."""
    record = {"name": name, "outcome": "crashed", "step": "import"}

    def save():
        pathlib.Path(out_path).write_text(json.dumps(record, indent=1, default=str))

    save()
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    import tfprune

    tf.config.threading.set_intra_op_parallelism_threads(1)
    sweep = load_configurations()
    entry = sweep.CONFIGURATIONS[name]
    record.update(family=entry.family, kind=entry.kind, targets=entry.targets, step="build")
    save()
    start = time.perf_counter()
    try:
        keras.utils.set_random_seed(0)
        model = entry.build(keras_hub)
        sample = entry.sample()
        record["sample_problems"] = sweep.check_sample(entry, model)
        dense = _outputs(model, sample)
    except Exception as error:
        record.update(outcome="build failed", **_describe(error, True))
        save()
        return
    record.update(
        params=int(model.count_params()), build_seconds=round(time.perf_counter() - start, 2)
    )
    record["step"] = "prune"
    save()

    start = time.perf_counter()
    try:
        small, record["warnings"] = _prune(model, entry, "raise")
    except Exception as error:
        own = _is_own_refusal(error)
        record.update(outcome="refused" if own else "crashed", **_describe(error, not own))
        record["prune_seconds"] = round(time.perf_counter() - start, 2)
        save()
        if own:
            record["freeze"] = _freeze(model, entry, sample, dense)
            save()
        return
    record["prune_seconds"] = round(time.perf_counter() - start, 2)
    record["params_after"] = int(small.count_params())
    record["params_removed"] = 1.0 - record["params_after"] / max(record["params"], 1)
    record["step"] = "run"
    save()

    try:
        pruned = _outputs(small, sample)
        record["shapes_kept"] = [value.shape for value in pruned] == [
            value.shape for value in dense
        ]
        record["finite"] = bool(all(np.isfinite(value).all() for value in pruned))
        record["step"] = "reload"
        save()
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "small.keras")
            small.save(path)
            reloaded = _outputs(keras.models.load_model(path), sample)
        # As floats: an output may be a boolean mask (Moonshine's backbone returns its padding mask).
        record["reload_diff"] = max((float(np.max(np.abs(np.asarray(a, "float64") - np.asarray(b, "float64")),
                                                  initial=0.0)) for a, b in zip(reloaded, pruned)), default=0.0)  # fmt: skip
    except Exception as error:
        record.update(outcome="crashed", **_describe(error, True))
        save()
        return
    record.update(outcome="pruned", step="export")
    save()

    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as directory:
            report = tfprune.export.to_tflite(small, os.path.join(directory, "small.tflite"), sample_inputs=sample,
                                              verbose=0)  # fmt: skip
        record["export_error"] = float(report.max_abs_error)
    except Exception as error:
        record["export"] = _describe(error, not _is_own_refusal(error))
        record["export"]["refused"] = _is_own_refusal(error)
    record["export_seconds"] = round(time.perf_counter() - start, 2)
    record["step"] = "done"
    save()


def _freeze(model, entry, sample, dense):
    """The prune step again with `unknown="freeze"`; returns its record."""
    import numpy as np

    try:
        small, warnings = _prune(model, entry, "freeze")
        pruned = _outputs(small, sample)
    except Exception as error:
        own = _is_own_refusal(error)
        return {"outcome": "refused" if own else "crashed", **_describe(error, not own)}
    return {
        "outcome": "pruned",
        "params_removed": 1.0 - small.count_params() / max(model.count_params(), 1),
        "finite": bool(all(np.isfinite(value).all() for value in pruned)),
        "shapes_kept": [value.shape for value in pruned] == [value.shape for value in dense],
        "warnings": warnings,
    }


# ---------------------------------------------------------------- driver


def run_one(name, timeout, directory):
    """Runs the worker for `name` in a subprocess; returns its record (a crash or timeout included)."""
    out_path = os.path.join(directory, f"{name}.json")
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [
        sys.executable,
        "-m",
        "benchmarks.keras_hub_sweep",
        "--worker",
        name,
        "--worker-out",
        out_path,
    ]
    start = time.perf_counter()
    failure = None
    try:
        completed = subprocess.run(command, cwd=HERE.parent, env=environment, capture_output=True, text=True,
                                   timeout=timeout)  # fmt: skip
        if completed.returncode != 0:
            failure = (
                f"process exited with {completed.returncode}: {completed.stderr.strip()[-1500:]}"
            )
    except subprocess.TimeoutExpired:
        failure = f"timeout after {timeout} s"
    try:
        record = json.loads(pathlib.Path(out_path).read_text())
    except (OSError, ValueError):
        record = {"name": name, "outcome": "crashed", "step": "start"}
    if failure:
        step = record.get("step", "?")
        if step in ("export", "done") and record.get("outcome") == "pruned":
            record["export"] = {"error_type": "Timeout" if "timeout" in failure else "ProcessDied",
                                "error": failure.splitlines()[0][:500], "refused": False}  # fmt: skip
        elif step == "prune" and record.get("outcome") == "refused":  # the freeze retry died
            record["freeze"] = {"outcome": "crashed", "error_type": "Timeout" if "timeout" in failure else "ProcessDied",
                                "error": failure.splitlines()[0][:500]}  # fmt: skip
        else:
            record.update(outcome="crashed", error_type="Timeout" if "timeout" in failure else "ProcessDied",
                          error=f"{failure.splitlines()[0][:500]} (during {step})", traceback=failure[-4000:])  # fmt: skip
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def _cell(text, width=160):
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _percent(value):
    return "" if value is None else f"{100 * value:.1f}"


def _number(value):
    return "" if value is None else f"{value:.1e}"


def table(records):
    """The markdown table of the records."""
    lines = [
        "| config | kind | outcome | % params removed | reload diff | export error | error | freeze |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for record in records:
        export = record.get("export")
        if export:
            export_text = ("refused: " if export.get("refused") else "failed: ") + export.get(
                "error_type", ""
            )
        else:
            export_text = _number(record.get("export_error"))
        error = (
            f"{record['error_type']}: {record.get('error', '')}" if record.get("error_type") else ""
        )
        if error and record["outcome"] in ("crashed", "build failed"):
            error = f"({record.get('step')}) {error}"
        if export and not error:
            error = f"export: {export.get('error', '')}"
        freeze = record.get("freeze")
        freeze_text = ""
        if freeze:
            freeze_text = freeze["outcome"]
            if freeze["outcome"] == "pruned":
                freeze_text += f" {_percent(freeze.get('params_removed'))}%"
            else:
                freeze_text += (
                    f" ({freeze.get('error_type')}: {_cell(freeze.get('error', ''), 60)})"
                )
        lines.append(
            f"| {record['name']} | {record.get('kind', '')} | {record['outcome']} | "
            f"{_percent(record.get('params_removed'))} | {_number(record.get('reload_diff'))} | {export_text} | "
            f"{_cell(error)} | {_cell(freeze_text, 80)} |"
        )
    return "\n".join(lines)


def summary(records, not_constructible):
    counts = {}
    for record in records:
        counts[record["outcome"]] = counts.get(record["outcome"], 0) + 1
    text = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()))
    lines = [f"{len(records)} configurations: {text}."]
    if not_constructible:
        lines.append("")
        lines.append("Not constructible offline at a tiny size:")
        lines.extend(f"- {name}: {reason}" for name, reason in not_constructible.items())
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated configuration names")
    parser.add_argument("--json", default=None, help="write every record to this JSON file")
    parser.add_argument(
        "--quick", action="store_true", help=f"only {', '.join(QUICK)}; RESULTS.md untouched"
    )
    parser.add_argument("--jobs", type=int, default=2, help="configurations at a time (default 2)")
    parser.add_argument(
        "--timeout", type=int, default=300, help="seconds per configuration (default 300)"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        work(args.worker, args.worker_out)
        return 0

    sweep = load_configurations()
    names = [name.strip() for name in args.only.split(",") if name.strip()] or list(
        sweep.CONFIGURATIONS
    )
    if args.quick:
        names = list(QUICK)
    unknown = [name for name in names if name not in sweep.CONFIGURATIONS]
    if unknown:
        parser.error(f"unknown configurations {unknown}; known: {', '.join(sweep.CONFIGURATIONS)}")
    records = {}
    with tempfile.TemporaryDirectory() as directory:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {pool.submit(run_one, name, args.timeout, directory): name for name in names}
            for future in concurrent.futures.as_completed(futures):
                record = future.result()
                records[record["name"]] = record
                print(f"[{len(records)}/{len(names)}] {record['name']}: {record['outcome']} ({record['seconds']} s)"
                      + (f" {record.get('error_type')}: {_cell(record.get('error', ''), 150)}"
                         if record.get("error_type") else ""), flush=True)  # fmt: skip
    ordered = [records[name] for name in names]
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(ordered, indent=1, default=str))
    not_constructible = {} if (args.only or args.quick) else dict(sweep.NOT_CONSTRUCTIBLE)
    text = table(ordered) + "\n\n" + summary(ordered, not_constructible)
    print(text)
    if not (args.only or args.quick):
        import keras_hub

        write_section(SECTION, (
            f"{SECTION}\n\n`{command_line('benchmarks.keras_hub_sweep', argv)}` on {machine()}, keras-hub "
            f"{keras_hub.__version__}: `tfprune.prune(model, \"l1\", rate={RATE})` on a tiny random "
            "configuration of every keras-hub model class (tests/zoo/keras_hub_sweep.py); \"reload diff\" is "
            "the largest difference after a .keras round trip, \"export error\" LiteRT's verified largest "
            "error, \"freeze\" the same call with `unknown=\"freeze\"` where the default refuses.\n\n"
            f"{text}\n"
        ))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
