"""TensorFlow, LiteRT and tensorflow-datasets are an extra: the core runs without them.

A subprocess on JAX, in which the three packages look uninstalled (a
`sitecustomize.py` puts None in `sys.modules` for each, which is what
`import` and `importlib.util.find_spec` then report as absent), builds,
prunes, trains an STR model and analyses it; each TensorFlow-only entry point
raises the one sentence saying what to install, and the `tfprune` command
exits 2 with it and no traceback.
"""

import doctest
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from tfprune import _optional

ROOT = pathlib.Path(__file__).resolve().parent.parent
INSTALL = 'install it with: pip install "tfprune[tensorflow]"'
INSTALL_BOTH = 'install them with: pip install "tfprune[tensorflow]"'

HIDE_TENSORFLOW = """
import sys

# As if not installed: `import` raises ModuleNotFoundError and `importlib.util.find_spec` returns None.
for name in ("tensorflow", "ai_edge_litert", "tensorflow_datasets"):
    sys.modules[name] = None
"""

WITHOUT_TENSORFLOW = r"""
import json, sys

import keras
import numpy as np

import tfprune
from tfprune._optional import MissingDependencyError


def sentence(call):
    try:
        call()
    except MissingDependencyError as error:
        return str(error)
    return "no error"


out = sys.argv[1]
inputs = keras.Input((8, 8, 3))
x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
x = keras.layers.BatchNormalization(name="bn")(x)
x = keras.layers.ReLU(name="relu")(x)
x = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(x)
x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
model.save(f"{out}/model.keras")
images = np.random.default_rng(0).random((16, 8, 8, 3), dtype="float32")
labels = np.arange(16) % 3

pruned, result = tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)
sparse = tfprune.sparsify(model)
sparse.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = sparse.fit(images, labels, epochs=1, batch_size=8, verbose=0)
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
print(json.dumps({
    "backend": keras.backend.backend(),
    "conv_filters": pruned.get_layer("conv").filters,
    "str_output": list(sparse(images).shape),
    "str_loss_finite": bool(np.isfinite(history.history["loss"][0])),
    "analysis": str(tfprune.analyze(pruned)).count("Conv2D"),
    "digits_as_numpy": list(tfprune.datasets.digits(image_size=8, as_numpy=True).info.input_shape),
    "to_tflite": sentence(lambda: tfprune.export.to_tflite(model, f"{out}/model.tflite")),
    "predict": sentence(lambda: tfprune.export.predict(f"{out}/model.tflite", images)),
    "tf_data": sentence(lambda: tfprune.datasets.digits(image_size=8)),
    "cifar": sentence(lambda: tfprune.datasets.cifar10()),
    "tensorboard": sentence(lambda: model.fit(
        images, labels, epochs=1, verbose=0, callbacks=[tfprune.callbacks.BNSparsity(log_dir=out)])),
    "loaded": sorted(name for name, module in sys.modules.items()
                     if module is not None and name.split(".")[0] in ("tensorflow", "ai_edge_litert", "tensorflow_datasets")),
}))
"""


def _environment(tmp_path, backend):
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HIDE_TENSORFLOW)
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(ROOT)]))
    environment.pop("KERAS_BACKEND", None)
    if backend is not None:
        environment["KERAS_BACKEND"] = backend
    return environment


def _tfprune_command(tmp_path, *arguments, backend=None):
    # A script named `tfprune`, as the console script is: the package chooses the command's backend by that name.
    script = tmp_path / "bin" / "tfprune"
    script.parent.mkdir(exist_ok=True)
    script.write_text("import sys, _tfprune_main\nsys.exit(_tfprune_main.main())\n")
    return subprocess.run(
        [sys.executable, str(script), *arguments], capture_output=True, text=True,
        env=_environment(tmp_path, backend), cwd=tmp_path, timeout=300,
    )  # fmt: skip


def test_the_core_runs_on_jax_without_tensorflow_and_each_tensorflow_feature_says_what_to_install(
    tmp_path,
):
    pytest.importorskip("jax")
    process = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, str(tmp_path)], capture_output=True, text=True,
        env=_environment(tmp_path, "jax"), cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.splitlines()[-1])
    assert result["backend"] == "jax" and result["loaded"] == []
    assert (
        result["conv_filters"] == 4
        and result["str_output"] == [16, 3]
        and result["str_loss_finite"]
    )
    assert result["analysis"] >= 2 and result["digits_as_numpy"] == [8, 8, 3]
    assert (
        result["to_tflite"]
        == f"Export to LiteRT needs TensorFlow and ai-edge-litert, which are not installed; {INSTALL_BOTH}"
    )
    assert (
        result["predict"]
        == f"Running a .tflite file needs ai-edge-litert, which is not installed; {INSTALL}"
    )
    assert result["tf_data"] == (
        f"The tf.data form of tfprune.datasets (as_numpy=False) needs TensorFlow, which is not installed; {INSTALL}"
    )
    assert result["cifar"] == (
        "Loading cifar10 (tensorflow-datasets) needs tensorflow-datasets and TensorFlow, which are not installed; "
        + INSTALL_BOTH
    )
    assert result["tensorboard"] == (
        f"Writing TensorBoard summaries (log_dir=...) needs TensorFlow, which is not installed; {INSTALL}"
    )

    # The command chooses JAX by itself when TensorFlow is missing, and says what to install in one line.
    export = _tfprune_command(
        tmp_path, "export", str(tmp_path / "model.keras"), "-o", str(tmp_path / "m.tflite")
    )
    assert export.returncode == 2
    assert export.stderr.splitlines() == [f"tfprune: error: {result['to_tflite']}"]
    demo = _tfprune_command(
        tmp_path, "demo", "--quick", "--out", str(tmp_path / "demo"), backend="jax"
    )
    assert demo.returncode == 2
    assert demo.stderr.splitlines() == [
        f"tfprune: error: The demo needs TensorFlow and ai-edge-litert, which are not installed; {INSTALL_BOTH}"
    ]
    assert not (tmp_path / "m.tflite").exists() and not (tmp_path / "demo").exists()


def test_only_the_helper_imports_tensorflow_litert_and_tensorflow_datasets():
    # Every other module asks `tfprune._optional` (require, require_tensorflow, OptionalModule), so that a
    # missing package is the same sentence everywhere. Allowed: the command's quiet TensorFlow import
    # (only when installed) and the script measure.py runs in a child process after its parent's check.
    allowed = {"tfprune/__init__.py", "tfprune/export/measure.py", "tfprune/_optional.py"}
    direct = re.compile(
        r"^\s*(import|from)\s+(tensorflow|ai_edge_litert|tensorflow_datasets)\b|LazyModule\(\"(tensorflow|ai_edge_litert)"
    )
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "tfprune").rglob("*.py"))
        if str(path.relative_to(ROOT)) not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if direct.search(line) and ">>>" not in line  # docstring examples do not run at import
    ]
    assert offenders == []


def test_the_helpers_examples_and_a_broken_install_is_not_called_missing(monkeypatch):
    results = doctest.testmod(_optional, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 4 and results.failed == 0

    def broken(name):
        raise ModuleNotFoundError("No module named 'absl'", name="absl")

    monkeypatch.setattr(_optional.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="absl") as error:
        _optional.require("Export to LiteRT", "tensorflow")
    assert not isinstance(error.value, _optional.MissingDependencyError)
    assert _optional.is_tf_dataset([1, 2]) is False
