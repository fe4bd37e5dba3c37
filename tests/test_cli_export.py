"""`tfprune export` and `tfprune bench` for models with unknown sizes, several inputs or uint8 inputs.

The command makes the verification inputs itself; `--input-shape` gives the
sizes a model leaves unknown and `--sample-inputs` real inputs (`.npy`, or
`.npz` with one array per input name). Every refusal is one sentence naming
the flag, exit code 2, and nothing written.
"""

import json

import keras
import numpy as np
import pytest

from tfprune import cli


@pytest.fixture
def any_size_cnn(tmp_path):
    """A CNN for images of any height and width (valid 3x3 convolution, global pooling)."""
    image = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    path = tmp_path / "any_size.keras"
    keras.Model(image, keras.layers.Dense(3, name="logits")(x), name="cnn").save(path)
    return path


@pytest.fixture
def text_model(tmp_path):
    """Token ids and a padding mask of any length (two int32 inputs of the same shape)."""
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    mask = keras.ops.expand_dims(keras.ops.cast(padding_mask, "float32"), -1)
    pooled = keras.ops.sum(keras.layers.Embedding(10, 4, name="embedding")(token_ids) * mask, axis=1)
    path = tmp_path / "text.keras"
    keras.Model([token_ids, padding_mask], keras.layers.Dense(2, name="logits")(pooled), name="text").save(path)
    return path


def _error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_unknown_image_size_is_given_by_input_shape_for_export_and_bench(tmp_path, any_size_cnn, capsys):
    output = tmp_path / "cnn.tflite"
    assert cli.main(["export", str(any_size_cnn), "-o", str(output)]) == 2
    (line,) = _error_lines(capsys)
    assert "input 'image' (None, None, None, 3) unknown" in line
    assert "--input-shape 32,32,3" in line and "--sample-inputs FILE" in line
    assert not output.exists()

    assert cli.main(["export", str(any_size_cnn), "-o", str(output), "--input-shape", "16,16,3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"][0]["shape"] == [-1, -1, -1, 3]  # the file keeps the size dynamic
    assert report["max_abs_error"] < 1e-4 and report["num_samples"] == 16

    assert cli.main(["bench", str(output), "--threads", "1", "--runs", "2"]) == 2
    (line,) = _error_lines(capsys)
    assert "cannot time them; pass --input-shape 32,32,3" in line
    assert cli.main(["bench", str(output), "--threads", "1", "--runs", "2", "--input-shape", "24,20,3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shapes"] == [[1, 24, 20, 3]]


def test_sample_inputs_npy_verifies_and_calibrates_int8(tmp_path, any_size_cnn, capsys):
    images = np.random.default_rng(0).uniform(size=(24, 12, 10, 3)).astype("float32")  # not square
    np.save(tmp_path / "images.npy", images)
    output = tmp_path / "cnn_int8.tflite"
    arguments = ["export", str(any_size_cnn), "-o", str(output), "--quantize", "int8",
                 "--sample-inputs", str(tmp_path / "images.npy"), "--json"]  # fmt: skip
    assert cli.main(arguments) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_samples"] == 24 and report["max_abs_error"] < 0.05
    assert report["ops"]["QUANTIZE"] == 1


def test_uint8_input_exports_without_flags(tmp_path, capsys):
    pixels = keras.Input((8, 8, 3), dtype="uint8", name="pixels")
    x = keras.layers.Conv2D(4, 3, name="conv")(keras.layers.Rescaling(1 / 255)(pixels))
    path = tmp_path / "pixels.keras"
    keras.Model(pixels, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))).save(path)
    assert cli.main(["export", str(path), "-o", str(tmp_path / "pixels.tflite"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"][0]["dtype"] == "uint8" and report["max_abs_error"] < 1e-4


@pytest.mark.parametrize(
    ("model", "arguments", "message"),
    [
        ("cnn", ["--input-shape", "a,b"], "argument --input-shape: 'a,b' is not a shape; give positive sizes"),
        ("cnn", ["--input-shape", "0,4,3"], "'0,4,3' is not a shape"),
        ("cnn", ["--input-shape", "=12"], "'=12' is not a shape"),
        ("cnn", ["--input-shape", "16,16"], "--input-shape 16,16 does not fit input 'image' of shape (None, None, None, 3)"),
        ("cnn", ["--input-shape", "16,16,4"], "give 3 sizes without the batch axis, such as 32,32,3"),
        ("cnn", ["--input-shape", "16,12,3", "--quantize", "int8", "--calibration", "digits"],
         "--calibration digits makes square images"),
        ("text", [], "leaves sizes of inputs 'token_ids' (None,"),
        ("text", [], "pass --input-shape token_ids=32 padding_mask=32"),
        ("text", ["--input-shape", "token_ids=12"], "input 'padding_mask' (None, None) unknown"),
        ("text", ["--input-shape", "tokens=12"], "names input 'tokens', but model 'text' has inputs ['token_ids', 'padding_mask']"),
        ("text", ["--input-shape", "12", "7"], "at most one shape without a name"),
        ("text", ["--input-shape", "12", "--quantize", "int8", "--calibration", "digits"],
         "--calibration digits needs an image model"),
        ("text", ["--sample-inputs", "{dir}/notes.txt"], "--sample-inputs '{dir}/notes.txt' is not a .npy or .npz file"),
        ("text", ["--sample-inputs", "{dir}/missing.npz"], "--sample-inputs file '{dir}/missing.npz' does not exist"),
        ("text", ["--sample-inputs", "{dir}/ids.npy"], "holds one array, but model 'text' has 2 inputs"),
        ("text", ["--sample-inputs", "{dir}/ids.npz"], "`--sample-inputs` must map each input name of the model"),
        ("text", ["--sample-inputs", "{dir}/corrupt.npz"], "Cannot read --sample-inputs '{dir}/corrupt.npz' as NumPy data"),
        ("cnn", ["--sample-inputs", "{dir}/ids.npy"], "`--sample-inputs` must hold at least one sample of input 'image'"),
    ],
)  # fmt: skip
def test_bad_shapes_and_sample_files_exit_2_in_one_line(tmp_path, any_size_cnn, text_model, capsys, model, arguments,
                                                         message):  # fmt: skip
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip archive")
    np.save(tmp_path / "ids.npy", np.zeros((4, 12), "int32"))
    np.savez(tmp_path / "ids.npz", token_ids=np.zeros((4, 12), "int32"))
    files = sorted(tmp_path.iterdir())
    path = any_size_cnn if model == "cnn" else text_model
    arguments = ["export", str(path), "-o", str(tmp_path / "out.tflite"), *(a.format(dir=tmp_path) for a in arguments)]
    assert cli.main(arguments) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("tfprune: error: ") and message.format(dir=tmp_path) in lines[0]
    assert sorted(tmp_path.iterdir()) == files  # nothing written


def test_help_names_the_new_flags(capsys):
    for command in ("export", "bench"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "--input-shape" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    text = capsys.readouterr().out
    assert "--sample-inputs" in text and "token_ids=128 padding_mask=128" in text


def test_export_and_bench_take_the_same_input_shape_flag():
    parsers = next(action.choices for action in cli.build_parser()._actions if action.dest == "command")
    flags = {}
    for command in ("export", "bench"):
        (action,) = [a for a in parsers[command]._actions if "--input-shape" in a.option_strings]
        flags[command] = (type(action), action.nargs, action.type, action.default, action.metavar)
        # Both explain the format: one shape for every input, or NAME=SIZES per input.
        assert "224,224,3 for every input, or NAME=SIZES per input (token_ids=12 padding_mask=12)" in action.help
    assert flags["export"] == flags["bench"]
    parser = cli._Parser(prog="test")
    cli._add_input_shape_flag(parser, "the inputs", "model")
    assert parser.parse_args(["--input-shape", "4,4,3", "token_ids=12"]).input_shape == [
        (None, (4, 4, 3)), ("token_ids", (12,))
    ]
