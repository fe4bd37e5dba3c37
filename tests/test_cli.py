"""Tests of the `tfprune` command through its entry point.

Most cases call `tfprune.cli.main(argv)` in-process (what the console script
calls); a few run the installed console script in a subprocess to prove the
real command exits 2 with one line and no traceback.
"""

import json
import os
import signal
import subprocess
import sys
import time

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
    # An output that is a directory, even with --force, is refused the same way.
    (tmp_path / "out.keras").mkdir()
    result = _run(["strip", str(tmp_path / "missing.keras"), "-o", str(tmp_path / "out.keras"), "--force"])
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"tfprune: error: Output '{tmp_path / 'out.keras'}' is a directory; pass a file name ending in .keras."
    ]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["report", "{dir}/missing.keras"], "does not exist"),
        (["report", "{dir}/corrupt.keras"], "is not a valid .keras archive"),
        (["report", "{dir}/notes.txt"], "is not a .keras file"),
        (["prune", "{model}", "--criterion", "l1", "--rate", "1.5", "-o", "{dir}/o.keras"], "rate must be in"),
        (["prune", "{model}", "--criterion", "l1", "--rate", "half", "-o", "{dir}/o.keras"], "rate must be a number"),
        (["prune", "{model}", "--criterion", "magic", "--rate", "0.5", "-o", "{dir}/o.keras"], "Unknown criterion 'magic'; use one of "),
        (["strip", "{model}", "-o", "{model}"], "already exists; pass --force"),
        (["strip", "{model}", "-o", "{dir}/no/such/dir/o.keras"], "does not exist; create it first"),
        (["export", "{model}", "-o", "{dir}/o.keras"], "must end in .tflite"),
        (["bench", "{dir}/missing.tflite"], "does not exist"),
        (["frobnicate"], "invalid choice"),
        (["strip", "{model}", "-o", "{dir}/folder.keras", "--force"], "Output '{dir}/folder.keras' is a directory"),
        (["prune", "{model}", "--criterion", "l1", "--rate", "0.5", "-o", "{dir}/folder.keras", "--force"],
         "is a directory; pass a file name ending in .keras"),
        (["export", "{model}", "-o", "{dir}/folder.tflite", "--force"], "is a directory"),
        (["strip", "{model}", "-o", "{dir}/" + "a" * 300 + ".keras"], "is 306 characters long; this file system allows 255"),
        (["export", "{model}", "-o", "{dir}/" + "a" * 300 + ".tflite", "--force"], "characters long"),
        (["strip", "{model}", "-o", "/sys/o.keras"], "Cannot write to output directory '/sys'"),
        (["report", "{dir}/folder.keras"], "Input '{dir}/folder.keras' is a directory; pass a .keras file"),
        (["bench", "{dir}/folder.tflite"], "is a directory; pass a .tflite file"),
        (["bench", "{dir}/missing.tflite", "--runs", "abc"], "argument --runs: must be a positive integer; received 'abc'"),
        (["bench", "{dir}/missing.tflite", "--threads", "0"], "argument --threads: must be a positive integer"),
        (["prune", "{model}", "--criterion", "l1", "--rate", "0.5", "--round-to", "x", "-o", "{dir}/o.keras"],
         "argument --round-to: must be a positive integer; received 'x'"),
        (["prune", "{model}", "--criterion", "bn_gamma", "--rate", "0.5", "-o", "{dir}/o.keras", "--scope", "group",
          "--targets", "expansion"], "leave none of the 1 prunable groups"),
        (["demo", "--out", "{model}"], "is a file; pass a directory"),
    ],
)
def test_bad_input_exit_code_2_and_one_line(tmp_path, model_file, capsys, arguments, message):
    if "/sys/" in " ".join(arguments) and not os.path.isdir("/sys"):
        pytest.skip("needs a directory nobody may write to (/sys on Linux)")
    (tmp_path / "corrupt.keras").write_bytes(b"this is not a zip archive")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "folder.keras").mkdir()
    (tmp_path / "folder.tflite").mkdir()
    files = sorted(tmp_path.iterdir())
    original = model_file.read_bytes()
    arguments = [a.format(dir=tmp_path, model=model_file) for a in arguments]
    assert cli.main(arguments) == 2
    lines = _error_line(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("tfprune: error: ")
    assert message.format(dir=tmp_path) in lines[0]
    assert "Traceback" not in lines[0] and "_positive_int" not in lines[0]
    assert sorted(tmp_path.iterdir()) == files  # nothing written, not even a temporary file
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
    arguments = ["prune", str(model_file), "--criterion", "l1", "--rate", "0.5", "--round-to", "1", "-o", str(output),
                 "--json"]  # fmt: skip
    assert cli.main(arguments) == 0
    result = json.loads(capsys.readouterr().out)
    small = keras.saving.load_model(output)
    assert small.get_layer("conv").filters == 4  # half of the 8 channels of the only prunable group
    assert result["params_after"] == small.count_params() < result["params_before"]


def test_prune_that_removes_nothing_writes_nothing_and_exits_1(tmp_path, model_file, capsys):
    # 8 channels, rate 0.1: less than one channel, so the prune removes none.
    output = tmp_path / "small.keras"
    arguments = ["prune", str(model_file), "--criterion", "l1", "--rate", "0.1", "-o", str(output), "--json"]
    assert cli.main(arguments) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["unchanged"] is True
    assert "removed no channel" in captured.err and "nothing was written" in captured.err
    assert not output.exists()


def test_prune_default_scope_keeps_every_block_of_a_two_block_cnn(tmp_path, capsys):
    # conv1's filters (3x3x3) have far smaller L1 sums than conv2's (3x3x16): a
    # global l1 ranking at 0.5 takes every conv1 channel, so it is refused, and
    # the default ranks each group on its own.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = tmp_path / "two_blocks.keras"
    keras.Model(inputs, keras.layers.Dense(3, name="logits")(x)).save(path)
    output = tmp_path / "small.keras"
    assert cli.main(["prune", str(path), "--criterion", "l1", "--rate", "0.5", "-o", str(output)]) == 0
    small = keras.saving.load_model(output)
    assert (small.get_layer("conv1").filters, small.get_layer("conv2").filters) == (8, 16)
    capsys.readouterr()
    arguments = ["prune", str(path), "--criterion", "l1", "--rate", "0.5", "--scope", "global", "-o", str(output), "--force"]
    assert cli.main(arguments) == 2
    lines = _error_line(capsys)
    assert len(lines) == 1 and "would remove every channel of 1 group(s) ('conv1')" in lines[0]
    assert keras.saving.load_model(output).get_layer("conv1").filters == 8  # the earlier output is kept


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



def test_export_checks_the_output_before_converting(tmp_path, model_file, capsys, monkeypatch):
    from tfprune import export

    def must_not_run(*args, **kwargs):
        raise AssertionError("the conversion ran before the output was checked")

    monkeypatch.setattr(export, "to_tflite", must_not_run)
    (tmp_path / "folder.tflite").mkdir()
    for output in (tmp_path / ("b" * 300 + ".tflite"), tmp_path / "folder.tflite"):
        assert cli.main(["export", str(model_file), "-o", str(output), "--force"]) == 2
        assert len(_error_line(capsys)) == 1


def test_a_failed_write_names_the_output_not_the_temporary_file(tmp_path, model_file, capsys, monkeypatch):
    def refuse(self, filepath, *args, **kwargs):
        raise PermissionError(13, "Permission denied", filepath)

    monkeypatch.setattr(keras.Model, "save", refuse)
    output = tmp_path / "plain.keras"
    assert cli.main(["strip", str(model_file), "-o", str(output)]) == 2
    assert _error_line(capsys) == [f"tfprune: error: Cannot write output '{output}': Permission denied."]
    assert not output.exists() and not [path for path in tmp_path.iterdir() if ".tfprune-" in path.name]


def test_any_os_error_is_one_sentence_and_exit_2(tmp_path, model_file, capsys, monkeypatch):
    def broken_disk(path, unsafe=False):
        raise OSError(5, "Input/output error", path)

    monkeypatch.setattr(cli, "_load_model", broken_disk)
    assert cli.main(["report", str(model_file)]) == 2
    assert _error_line(capsys) == [f"tfprune: error: Cannot use '{model_file}': Input/output error."]


def test_warnings_are_one_tidy_line_without_source_paths(tmp_path, model_file, capsys):
    # round_to=8 keeps the 8 channels of the only prunable group: prune warns that it removed none.
    output = tmp_path / "same.keras"
    arguments = ["prune", str(model_file), "--criterion", "l1", "--rate", "0.3", "--round-to", "8", "-o", str(output)]
    assert cli.main(arguments) == 1
    lines = _error_line(capsys)
    assert len(lines) == 2, lines  # the warning, then why nothing was written
    assert lines[0].startswith("tfprune: warning: tfprune.prune removed no channel from model")
    assert lines[1].startswith("tfprune: removed no channel from")
    assert ".py" not in lines[0] and "UserWarning" not in lines[0]


def test_strip_says_when_there_is_nothing_to_strip(tmp_path, model_file, capsys):
    assert cli.main(["strip", str(model_file), "-o", str(tmp_path / "plain.keras")]) == 0
    assert "has no STR layer or pruning mask to strip" in capsys.readouterr().out
    sparse_path = tmp_path / "str.keras"
    assert cli.main(["sparsify", str(model_file), "-o", str(sparse_path)]) == 0
    capsys.readouterr()
    assert cli.main(["strip", str(sparse_path), "-o", str(tmp_path / "plain2.keras")]) == 0
    assert "STRConv2D" in capsys.readouterr().out


def test_prune_of_a_model_with_an_unknown_operation_suggests_a_flag_it_accepts(tmp_path, capsys):
    inputs = keras.Input((4,))
    x = keras.ops.flip(keras.layers.Dense(6, name="hidden")(inputs), axis=-1)  # not per channel
    x = keras.layers.Dense(5, name="second")(keras.layers.ReLU()(keras.layers.Dense(5, name="mid")(x)))
    path = tmp_path / "flip.keras"
    keras.Model(inputs, keras.layers.Dense(2, name="head")(x)).save(path)
    output = tmp_path / "small.keras"
    arguments = ["prune", str(path), "--criterion", "l1", "--rate", "0.5", "-o", str(output)]
    assert cli.main(arguments) == 2
    (line,) = _error_line(capsys)
    assert "operation 'flip' of type Flip; pass --unknown freeze" in line
    assert cli.main([*arguments, "--unknown", "freeze", "--round-to", "1"]) == 0
    assert keras.saving.load_model(output).get_layer("hidden").units == 6  # frozen by the unknown op


def test_litert_info_lines_stay_off_the_terminal(tmp_path, model_file, capfd):
    tflite_path = tmp_path / "model.tflite"
    assert cli.main(["export", str(model_file), "-o", str(tflite_path)]) == 0
    assert cli.main(["bench", str(tflite_path), "--threads", "1", "--runs", "2"]) == 0
    captured = capfd.readouterr()
    assert not [line for line in captured.err.splitlines() if line.startswith("INFO:")], captured.err


def test_sparsify_with_nothing_to_replace_says_so_and_writes_nothing(tmp_path, model_file, capsys):
    output = tmp_path / "str.keras"
    assert cli.main(["sparsify", str(model_file), "-o", str(output), "--skip", "conv", "logits"]) == 2
    (line,) = _error_line(capsys)  # tfprune.sparsify refuses; the command reports it in one line
    assert line.startswith("tfprune: error: ") and "Dense" in line
    assert not output.exists()
    assert cli.main(["sparsify", str(model_file), "-o", str(output)]) == 0
    assert "(2 layers replaced by STR layers)" in capsys.readouterr().out


def test_a_keras_file_with_a_lambda_is_refused_unless_unsafe_load_is_given(tmp_path, capsys):
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: t + t, name="code")(keras.layers.Dense(4, name="dense")(inputs))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, keras.layers.Dense(2, name="head")(x)).save(path)
    assert cli.main(["report", str(path)]) == 2
    error = capsys.readouterr().err
    assert "holds Python code (a Lambda layer)" in error and "--unsafe-load" in error
    assert cli.main(["--unsafe-load", "report", str(path)]) == 0
    assert "dense" in capsys.readouterr().out
    output = tmp_path / "sparse.keras"
    assert cli.main(["--unsafe-load", "sparsify", str(path), "-o", str(output)]) == 0
    assert cli.main(["report", str(output)]) == 0  # the lambda was traced into keras.ops: safe mode loads it


def test_prune_targets_a_transformers_heads_or_hidden_width(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6, 8), name="tokens")
    x = keras.layers.Dense(16, name="embed")(tokens)
    x = keras.layers.LayerNormalization(name="ln")(x + keras.layers.MultiHeadAttention(4, 4, name="mha")(x, x))
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(32, activation="relu", name="mlp")(x))
    path = tmp_path / "transformer.keras"
    keras.Model(tokens, keras.layers.Dense(3, name="logits")(x)).save(path)
    for targets, check in (("heads", lambda small: small.get_layer("mha").num_heads == 2),
                           ("hidden", lambda small: small.get_layer("embed").units == 8)):  # fmt: skip
        output = tmp_path / f"{targets}.keras"
        arguments = ["prune", str(path), "--criterion", "l1", "--rate", "0.5", "--round-to", "1",
                     "--targets", targets, "-o", str(output), "--json"]  # fmt: skip
        assert cli.main(arguments) == 0
        result = json.loads(capsys.readouterr().out)
        assert check(keras.saving.load_model(output))
        assert result["renormalized"] == (["ln"] if targets == "hidden" else [])
    # A criterion that needs data cannot get it from the command line: one sentence, exit code 2.
    arguments = ["prune", str(path), "--criterion", "taylor", "--rate", "0.5", "-o", str(tmp_path / "t.keras")]
    assert cli.main(arguments) == 2
    lines = _error_line(capsys)
    assert len(lines) == 1 and "Criterion 'taylor' scores channels on data" in lines[0]


def _launcher(*arguments):
    # The console script's own entry point, whatever an older install's script names.
    code = f"import sys, _tfprune_main; sys.exit(_tfprune_main.main({list(arguments)!r}))"
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("when", ["while-importing", "while-running"])
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, when):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(_launcher("demo", "--quick", "--out", str(tmp_path / "demo")),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)  # fmt: skip
    if when == "while-importing":
        time.sleep(0.5)  # TensorFlow takes seconds to import
    else:
        assert process.stdout.readline(), "the demo printed nothing"  # its first line: the imports are done
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in errors and errors.splitlines()[-1] == "tfprune: interrupted"


def test_the_launcher_and_the_cli_agree_on_the_interrupt_code_and_traceback(monkeypatch):
    import _tfprune_main

    assert _tfprune_main.INTERRUPTED == cli.INTERRUPTED == 130

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "main", interrupted)
    assert _tfprune_main.main(["report", "x.keras"]) == 130
    with pytest.raises(KeyboardInterrupt):
        _tfprune_main.main(["--traceback", "report", "x.keras"])


def test_an_interrupted_command_returns_130_without_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_report", interrupted)  # the parser is built when main runs
    assert cli.main(["report", "anything.keras"]) == 130
    assert capsys.readouterr().err.splitlines() == ["tfprune: interrupted"]
    with pytest.raises(KeyboardInterrupt):  # --traceback shows where it was
        cli.main(["--traceback", "report", "anything.keras"])
