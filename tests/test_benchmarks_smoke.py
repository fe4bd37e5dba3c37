"""Smoke test: the quick mode of every benchmark script runs, writing only to a temporary results file.

Each script runs as `python -m benchmarks.NAME --quick` in its own process
from a temporary copy of `benchmarks/`, with `$TFPRUNE_BENCH_RESULTS` pointing
at that copy's RESULTS.md (scripts with their own writer use the copy's file
too), so the real benchmarks/RESULTS.md is never touched.
"""

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


def _run_all_module():
    spec = importlib.util.spec_from_file_location("_bench_run_all", BENCHMARKS / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPTS = _run_all_module().scripts()
# Scripts that run TensorFlow Model Optimization in a tf_keras interpreter.
NEEDS_TFMOT = {"tfmot_compare", "str_vs_tfmot", "str_grid"}
# Scripts without a --quick flag yet (reported to the lead; strict, so adding it fails here as a reminder).
WITHOUT_QUICK = set()
# Sections the quick mode must write (the other scripts either write theirs or, by design, none in quick mode).
EXPECTED_SECTIONS = {
    "environment": ["## Machine, versions and commands"],
    "tfmot_compare": ["## Magnitude pruning vs TFMOT"],
    "export_litert": ["## Export (LiteRT)"],
    "str_vs_tfmot": ["## STR vs TFMOT: accuracy", "## STR vs TFMOT: step time"],
    "structured_latency": ["## Structured pruning: LiteRT speed-up", "## tfprune.prune time"],
    "sparse_deploy": ["## Sparse deployment (STR 90%)"],
    "str_grid": ["## STR vs magnitude pruning: grid"],
    "bn_sparsity_digits": ["## BN-γ sparsity training (digits): VGG-BN (32/32/64/64)"],
    "bn_sparsity_target": ["## BN-γ sparsity training to a target (digits): VGG-BN (32/32/64/64)"],
    "vit_digits": ["## Attention pruning: digits ViT"],
}


def _has_tfmot(interpreter):
    check = "import importlib.util as u, sys; sys.exit(not (u.find_spec('tf_keras') and u.find_spec('tensorflow_model_optimization')))"
    return os.path.exists(interpreter) and subprocess.run([interpreter, "-c", check]).returncode == 0


def _tfmot_interpreter():
    """The interpreter with tf_keras and TFMOT: `$TFPRUNE_TFMOT_PYTHON` (must work), else one found, else None.

    `make test` (and so CI) builds .venv-tfmot and sets the variable, so there the
    TFMOT scripts always run; a bare `pytest` without that environment skips them.
    """
    configured = os.environ.get("TFPRUNE_TFMOT_PYTHON")
    if configured:
        assert _has_tfmot(configured), f"TFPRUNE_TFMOT_PYTHON={configured} has no tf_keras and TFMOT (`make .venv-tfmot/.tfprune-bench-installed`)"
        return configured
    return next((c for c in (str(ROOT / ".venv-tfmot" / "bin" / "python"), sys.executable) if _has_tfmot(c)), None)


# Quick modes of 2-4 minutes each on 2 cores, whose library code the unit tests cover
# (test_search_*, test_criteria_data, test_pruners, test_bn_sparsity, test_export,
# test_str_layers, test_sparsity_budget): `slow`,
# run by `make test-all`, so that the CI suite stays under 15 minutes.
# Also the three that took 90-150 s each in a CI run (bn_sparsity_digits, str_vs_tfmot,
# structured_latency); tfmot_compare keeps the TFMOT interpreter exercised in CI.
SLOW_QUICK_MODES = {
    "search_digits", "structured_digits", "datadriven_digits", "export_litert", "str_grid", "str_step_time",
    "bn_sparsity_digits", "str_vs_tfmot", "structured_latency", "latency_model",
}


def _params():
    for name in SCRIPTS:
        marks = [pytest.mark.xfail(strict=True, reason=f"benchmarks/{name}.py has no --quick flag")] if name in WITHOUT_QUICK else []
        if name in SLOW_QUICK_MODES:
            marks.append(pytest.mark.slow)
        yield pytest.param(name, marks=marks, id=name)


def test_every_script_found():
    # The smoke test is only as good as its list: it must see the scripts that make bench runs.
    assert {"str_vs_tfmot", "structured_latency", "sparse_deploy", "environment", "tfmot_compare"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", _params())
def test_quick_mode_runs(name, tmp_path):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if name in NEEDS_TFMOT:
        interpreter = _tfmot_interpreter()
        if interpreter is None:
            pytest.skip("no interpreter with tf_keras and TFMOT (`make bench` creates .venv-tfmot)")
        environment["TFPRUNE_TFMOT_PYTHON"] = interpreter
    shutil.copytree(BENCHMARKS, tmp_path / "benchmarks", ignore=shutil.ignore_patterns("__pycache__", "RESULTS.md"))
    results = tmp_path / "benchmarks" / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Someone else's section\n\nkept\n")
    environment["TFPRUNE_BENCH_RESULTS"] = str(results)
    real = (BENCHMARKS / "RESULTS.md").read_bytes() if (BENCHMARKS / "RESULTS.md").exists() else None

    completed = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert completed.returncode == 0, f"{name} --quick failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    real_after = (BENCHMARKS / "RESULTS.md").read_bytes() if (BENCHMARKS / "RESULTS.md").exists() else None
    assert real_after == real, f"{name} --quick wrote to the real benchmarks/RESULTS.md"
    text = results.read_text()
    assert "## Someone else's section\n\nkept\n" in text  # other sections are left alone
    for section in EXPECTED_SECTIONS.get(name, []):
        assert section + "\n" in text, f"{name} --quick did not write {section!r}"
        assert f"-m benchmarks.{name} --quick" in text or name == "environment", "the exact command is recorded"
