"""Every Python block of README.md runs as written, and does what its comments say.

Each block runs in a fresh namespace in a temporary directory (the TFMOT block
in the tf_keras interpreter of `make test`, `$TFPRUNE_TFMOT_PYTHON`); then a
check reads the block's variables. A block without a check fails: a new
README example needs one here.
"""

import os
import pathlib
import re
import subprocess

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
    """`(first line number, code)` of every fenced Python block of README.md."""
    text = README.read_text()
    return [(text.count("\n", 0, match.start()) + 2, match.group(1))
            for match in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)]  # fmt: skip


def check_quick_tour(names, output):
    keras, tfprune = names["keras"], names["tfprune"]
    assert isinstance(names["plain"].layers[1], keras.layers.Conv2D)  # STR layers stripped
    kernel = names["plain"].layers[1].kernel.numpy()
    assert np.mean(kernel == 0) > 0.5  # the budget's 90% is reached on the whole model, not per layer
    assert any(isinstance(layer, tfprune.layers.STRConv2D) for layer in names["str_cnn"].layers)
    result = names["result"]
    assert result.params_after < result.params_before and names["small"].count_params() == result.params_after
    report = names["report"]
    assert report.max_abs_error is not None and report.size_bytes == os.path.getsize("small.tflite")
    assert "max abs error" in output and "median" in output.lower()  # the printed report and benchmark


def check_tfmot_drop_in(names, output):
    assert names["tfmot"].sparsity.keras.prune_low_magnitude.__module__.startswith("tfprune")


def check_tfprune_side(names, output):
    kernel = names["final"].layers[0].kernel.numpy()
    assert abs(np.mean(kernel == 0) - 0.9) < 0.01 and not names["final"].layers[0].__class__.__module__.startswith("tfprune")


def check_transformer(names, output):
    attention = [layer for layer in names["small"].layers if layer.__class__.__name__ == "MultiHeadAttention"]
    assert names["result"].renormalized and "layer_normalization" in output
    heads_pruned, _ = names["tfprune"].prune(names["model"], "l1", rate=0.5, targets="heads")
    assert [layer.num_heads for layer in heads_pruned.layers if hasattr(layer, "num_heads")] == [2]
    assert attention and attention[0].num_heads == 4  # targets="hidden" keeps the heads


def check_several_inputs(names, output):
    assert "(4, 2)" in output
    assert sorted((tensor["name"], tensor["shape"]) for tensor in names["report"].inputs) == [
        ("padding_mask", [-1, -1]), ("token_ids", [-1, -1])]  # fmt: skip


def check_latency_budget(names, output):
    table, result = names["table"], names["result"]
    assert result.latency["predicted_ms"] <= 0.6 * table.total + 1e-9
    loaded = names["tfprune"].latency.LatencyModel.load("latency_1thread.json")
    assert loaded.of_widths({"conv": 16}) == table.of_widths({"conv": 16})
    assert "latency (LiteRT, 1 thread): target" in output


def check_decoder(names, output):
    assert "(1, 1, 50)" in output
    result = names["result"]
    assert result.params_after < result.params_before


def check_one_shot(names, output):
    result = names["result"]
    assert result.global_sparsity == 0.5
    assert [record["name"] for record in result.layers] == ["up", "down"]
    assert all(0 < record["error"] < 1 for record in result.layers)
    assert "one-shot sparsegpt pruning at 2:4" in output and output.rstrip().endswith("True")


# A distinctive line of each block -> its check; "tf_keras" marks the block that runs under TFMOT.
CHECKS = {
    "# 1. Unstructured, learnable (STR)": check_quick_tour,
    "import tfprune.tfmot as tfmot": check_tfmot_drop_in,
    "# tfprune, Keras 3": check_tfprune_side,
    "# A one-block transformer classifier": check_transformer,
    'token_ids = keras.Input((None,), dtype="int32", name="token_ids")': check_several_inputs,
    "keras_hub.models.LlamaCausalLM": check_decoder,
    "# Prune to 60% of the dense latency": check_latency_budget,
    "# One-shot pruning of a trained model from calibration inputs": check_one_shot,
    "# TFMOT, legacy tf_keras only": None,
}


def _check_for(code):
    found = [check for key, check in CHECKS.items() if key in code]
    assert len(found) == 1, f"README block starting {code.splitlines()[0]!r} has {len(found)} checks in {__file__}"
    return found[0]


def _tfmot_interpreter():
    configured = os.environ.get("TFPRUNE_TFMOT_PYTHON")
    default = README.parent / ".venv-tfmot" / "bin" / "python"
    return configured or (str(default) if default.exists() else None)


@pytest.mark.parametrize("line, code", [pytest.param(line, code, id=f"line{line}") for line, code in python_blocks()])
def test_readme_block_runs_as_written(line, code, tmp_path, monkeypatch, capsys):
    check = _check_for(code)
    monkeypatch.chdir(tmp_path)
    if "# TFMOT, legacy tf_keras only" in code:
        interpreter = _tfmot_interpreter()
        if interpreter is None:
            pytest.skip("needs the tf_keras + TFMOT interpreter of `make test` (.venv-tfmot)")
        code += "\nimport numpy\nprint('sparsity', numpy.mean(final.layers[0].kernel.numpy() == 0))\n"
        done = subprocess.run([interpreter, "-c", code], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert abs(float(done.stdout.split("sparsity")[-1]) - 0.9) < 0.01
        return
    if "keras_hub" in code:
        pytest.importorskip("keras_hub", reason="install the `keras-hub` extra")
    names = {"__name__": "readme"}
    exec(compile(code, f"README.md, line {line}", "exec"), names)  # noqa: S102 - the README's own example
    check(names, capsys.readouterr().out)


def test_every_block_is_found_and_checked():
    blocks = python_blocks()
    assert len(blocks) == len(CHECKS)
    assert {id(_check_for(code)) for _, code in blocks} == {id(check) for check in CHECKS.values()}
