"""Tests of the `tfprune` command through its entry point.

Most cases call `tfprune.cli.main(argv)` in-process (what the console script
calls); a few run the installed console script in a subprocess to prove the
real command exits 2 with one line and no traceback.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfprune import cli

SUBCOMMANDS = ("demo", "report", "prune", "sparsify", "strip", "export", "bench")


def _command():
    script = os.path.join(os.path.dirname(sys.executable), "tfprune")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "tfprune.cli"]


def _run(arguments):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [*_command(), *arguments], capture_output=True, text=True, env=environment, timeout=300
    )


@pytest.fixture
def model_file(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    path = tmp_path / "model.keras"
    model.save(path)
    return path


def _error_line(capsys):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    return lines


def test_help_of_every_subcommand():
    result = _run(["--help"])
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"])
        assert exit_info.value.code == 0


def test_real_command_bad_input_is_one_line_exit_2(tmp_path):
    result = _run(["report", str(tmp_path / "missing.keras")])
    assert result.returncode == 2
    # Exactly one line on stderr: no traceback and no TensorFlow start-up log.
    assert result.stderr.splitlines() == [
        f"tfprune: error: Input file '{tmp_path / 'missing.keras'}' does not exist."
    ]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["report", "{dir}/missing.keras"], "does not exist"),
        (["report", "{dir}/corrupt.keras"], "is not a valid .keras archive"),
        (["report", "{dir}/notes.txt"], "is not a .keras file"),
        (["prune", "{model}", "--criterion", "l1", "--rate", "1.5", "-o", "{dir}/o.keras"], "rate must be in"),
        (["prune", "{model}", "--criterion", "l1", "--rate", "half", "-o", "{dir}/o.keras"], "rate must be a number"),
        (["prune", "{model}", "--criterion", "magic", "--rate", "0.5", "-o", "{dir}/o.keras"], "Unknown criterion 'magic'"),
        (["strip", "{model}", "-o", "{model}"], "already exists; pass --force"),
        (["strip", "{model}", "-o", "{dir}/no/such/dir/o.keras"], "does not exist; create it first"),
        (["export", "{model}", "-o", "{dir}/o.keras"], "must end in .tflite"),
        (["bench", "{dir}/missing.tflite"], "does not exist"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exit_code_2_and_one_line(tmp_path, model_file, capsys, arguments, message):
    (tmp_path / "corrupt.keras").write_bytes(b"this is not a zip archive")
    (tmp_path / "notes.txt").write_text("hello")
    original = model_file.read_bytes()
    arguments = [a.format(dir=tmp_path, model=model_file) for a in arguments]
    assert cli.main(arguments) == 2
    lines = _error_line(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("tfprune: error: ")
    assert message in lines[0]
    assert model_file.read_bytes() == original  # the input file is never modified


def test_strip_writes_equivalent_model_and_respects_force(tmp_path, model_file, capsys):
    output = tmp_path / "plain.keras"
    assert cli.main(["strip", str(model_file), "-o", str(output)]) == 0
    original = keras.saving.load_model(model_file)
    stripped = keras.saving.load_model(output)
    inputs = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(stripped(inputs), original(inputs), atol=1e-6)
    assert cli.main(["strip", str(model_file), "-o", str(output)]) == 2
    assert "--force" in _error_line(capsys)[-1]
    assert cli.main(["strip", str(model_file), "-o", str(output), "--force"]) == 0


def test_prune_writes_a_smaller_model_and_reports_json(tmp_path, model_file, capsys):
    output = tmp_path / "small.keras"
    arguments = ["prune", str(model_file), "--criterion", "l1", "--rate", "0.5", "-o", str(output), "--json"]
    assert cli.main(arguments) == 0
    result = json.loads(capsys.readouterr().out)
    small = keras.saving.load_model(output)
    assert small.get_layer("conv").filters == 4  # half of the 8 channels of the only prunable group
    assert result["params_after"] == small.count_params() < result["params_before"]


def test_sparsify_then_strip_round_trip_through_files(tmp_path, model_file):
    sparse_path, plain_path = tmp_path / "str.keras", tmp_path / "plain.keras"
    assert cli.main(["sparsify", str(model_file), "-o", str(sparse_path), "--skip", "logits"]) == 0
    sparse = keras.saving.load_model(sparse_path)
    assert type(sparse.get_layer("conv")).__name__ == "STRConv2D"
    assert type(sparse.get_layer("logits")).__name__ == "Dense"
    assert cli.main(["strip", str(sparse_path), "-o", str(plain_path)]) == 0
    plain = keras.saving.load_model(plain_path)
    original = keras.saving.load_model(model_file)
    inputs = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(plain(inputs), original(inputs), atol=1e-5)


def test_export_and_bench_json(tmp_path, model_file, capsys):
    tflite_path = tmp_path / "model.tflite"
    assert cli.main(["export", str(model_file), "-o", str(tflite_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["size_bytes"] == tflite_path.stat().st_size
    assert report["max_abs_error"] < 1e-4
    assert cli.main(["bench", str(tflite_path), "--threads", "1", "--runs", "3", "--json"]) == 0
    latency = json.loads(capsys.readouterr().out)["latency"]
    assert [entry["threads"] for entry in latency] == [1] and latency[0]["median_ms"] > 0


def test_report_json_parses_and_counts_params(model_file, capsys):
    assert cli.main(["report", str(model_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected_params = (3 * 3 * 3 * 8 + 8) + 4 * 8 + (8 * 3 + 3)
    assert report["totals"]["params"] == expected_params
    expected_macs = 8 * 8 * 3 * 3 * 3 * 8 + 8 * 3  # conv + dense multiply-accumulates
    assert report["totals"]["macs"] == expected_macs


def test_no_subcommand_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_traceback_flag_reraises(tmp_path):
    with pytest.raises(cli.UsageError):
        cli.main(["--traceback", "report", str(tmp_path / "missing.keras")])
