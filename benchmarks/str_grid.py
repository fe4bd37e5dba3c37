"""STR against gradual magnitude pruning on a grid of models, optimizers, targets, seeds and starts.

Usage: `.venv/bin/python -m benchmarks.str_grid [--quick] [--workers N] [--cells PATH] [--table-only]
[--tfmot-python PATH] [--data {digits,fashion-mnist}] [--train-size N]`.
Writes the `## STR vs magnitude pruning: grid` section of the results file
(`benchmarks.common.results_path()`).

Every cell trains one model on the offline digits (or, with `--data fashion-mnist`, on
Fashion-MNIST with its own section, cell file and the two small CNNs) with one method and the
same data, epochs, optimizer, ramp and starting weights as the other methods
of that cell:

- STR: tfprune's recommended usage, `tfprune.sparsify(model)` and
  `tfprune.callbacks.SparsityBudget(target)` with their defaults.
- GMP: `tfprune.prune_low_magnitude(model, PolynomialDecay(0 -> target))`
  with `UpdatePruningStep`, every layer at the target (a uniform budget).
- TFMOT 0.8.1 (`prune_low_magnitude` in tf_keras, its own process) on the
  plain CNN with Adam.

Both methods prune every Conv2D, DepthwiseConv2D and Dense kernel (what each
API prunes by default); sparsity rises along the same cubic ramp over the
first `RAMP_SHARE` of the epochs, thresholds and masks move every
`UPDATE_EVERY` steps. The grid: three architectures (a plain CNN with global
average pooling and no normalization layer, a residual CNN with
BatchNormalization, MobileNetV3-Small) x two optimizers (Adam 1e-3; SGD with
momentum 0.9 and cosine decay from 0.05) x targets 90/95/98%, trained from
scratch with seeds 0 and 1 (and 2 where the two methods end within 2 points).
Further tables: the plain CNN from a dense-trained start; an ablation of
STR's two safeguards (`compensate_shrinkage`, `min_layer_density`) at 98%;
the paper's own recipe (no SparsityBudget, SGD and weight decay on `s`).

Each finished cell is appended to a JSON-lines file (`--cells`), so a run that
is stopped resumes where it stopped; `--table-only` rewrites the section from
that file alone.
"""

import argparse
import json
import multiprocessing
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import command_line, image_data, machine, write_section
from benchmarks.str_vs_tfmot import add_tfmot_arguments, serve_tfmot_jobs

SECTION = "## STR vs magnitude pruning: grid"
HERE = pathlib.Path(__file__).resolve().parent
CELLS = HERE / "str_grid_cells.jsonl"
TARGETS = (0.9, 0.95, 0.98)
OPTIMIZERS = ("adam", "sgd")
RAMP_SHARE = 0.7
UPDATE_EVERY = 4
BATCH_SIZE = 64
CHANCE = 20.0  # percent: a cell at or below this has collapsed (10 classes)
# name -> (title, image size, epochs)
ARCHITECTURES = {
    "plain_cnn": ("plain CNN 32-64-128, GAP, no normalization, 16x16", 16, 15),
    "resnet_bn": ("residual CNN with BatchNormalization, 16x16", 16, 15),
    "mobilenet_v3_small": ("MobileNetV3-Small, 32x32", 32, 10),
}
# The ablation's STR variants: SparsityBudget / STR-layer arguments switched off.
VARIANTS = {
    "str": {},
    "str, no compensation": {"layer": {"compensate_shrinkage": False}},
    "str, no floor": {"budget": {"min_layer_density": 0.0}},
    "str, neither (tfprune 0.1)": {"layer": {"compensate_shrinkage": False}, "budget": {"min_layer_density": 0.0}},
    "str, uniform start": {"budget": {"start": "uniform"}},
}
# Fashion-MNIST (60,000 28x28 training images; `tfprune.datasets.fashion_mnist`, `make fashion-mnist`): the
# two small CNNs at the native size. MobileNetV3-Small is left out: at 32x32 its cells cost several times more.
FASHION_ARCHITECTURES = {
    "plain_cnn": ("plain CNN 32-64-128, GAP, no normalization, 28x28", 28, 10),
    "resnet_bn": ("residual CNN with BatchNormalization, 28x28", 28, 10),
}
# A stratified quarter of the training images: 60,000 x 10 epochs is ~20 min a cell on one core of the
# 2-core machine the results come from (under 5 with this subset). `--train-size 60000` runs all of them.
FASHION_TRAIN_SIZE = 15000
DATASETS = {
    "digits": dict(architectures=ARCHITECTURES, section=SECTION, cells=CELLS,
                   description="Digits (scikit-learn, offline)"),
    "fashion-mnist": dict(architectures=FASHION_ARCHITECTURES, section="## Fashion-MNIST: STR vs magnitude pruning",
                          cells=HERE / "str_grid_cells_fashion_mnist.jsonl",
                          description="Fashion-MNIST (the 10,000 test images; training images as stated per cell)"),
}  # fmt: skip
PAPER_DECAYS = (5e-5, 5e-4, 5e-3, 5e-2)  # L2 strength on s (Keras L2: penalty strength * s**2)
PAPER_S_INIT = -5.0


def build(architecture, keras_module, size):
    """One of the grid's architectures, for `size` x `size` x 3 digits, 10 logits.

    Args:
        architecture: String, a key of `ARCHITECTURES`.
        keras_module: The `keras` package (or `tf_keras` for the plain CNN).
        size: Int. Image height and width.

    Returns:
        A functional model.
    """
    layers = keras_module.layers
    inputs = layers.Input((size, size, 3))
    if architecture == "plain_cnn":
        x = inputs
        for index, filters in enumerate((32, 64, 128)):
            if index:
                x = layers.MaxPooling2D()(x)
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
        return keras_module.Model(inputs, layers.Dense(10)(x))
    if architecture == "resnet_bn":

        def conv_bn(x, filters, strides=1, kernel_size=3):
            x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False)(x)
            return layers.BatchNormalization(momentum=0.9)(x)

        x = layers.ReLU()(conv_bn(inputs, 16))
        for filters, strides in ((16, 1), (32, 2), (64, 2)):
            branch = conv_bn(layers.ReLU()(conv_bn(x, filters, strides)), filters)
            shortcut = x if strides == 1 else conv_bn(x, filters, strides, kernel_size=1)
            x = layers.ReLU()(layers.Add()([shortcut, branch]))
        x = layers.GlobalAveragePooling2D()(x)
        return keras_module.Model(inputs, layers.Dense(10)(x))
    import tfprune

    model = tfprune.models.mobilenet_v3("small", input_shape=(size, size, 3), classes=10)
    # Logits like the other two: the classifier's softmax would hide them from the loss.
    return keras_module.Model(model.inputs, model.layers[-2].output) if _ends_in_softmax(model) else model


def _ends_in_softmax(model):
    last = model.layers[-1]
    return type(last).__name__ == "Activation" and last.get_config().get("activation") == "softmax"


def optimizer(keras_module, name, total_steps):
    """Adam 1e-3, or SGD with momentum 0.9 and cosine decay from 0.05 over `total_steps`."""
    if name == "adam":
        return keras_module.optimizers.Adam(1e-3)
    schedule = keras_module.optimizers.schedules.CosineDecay(0.05, total_steps)
    return keras_module.optimizers.SGD(schedule, momentum=0.9)


def kernel_sparsities(model):
    """Per-layer share of exact zeros in every Conv2D/DepthwiseConv2D/Dense kernel, and over all of them."""
    names, zeros, sizes = [], [], []
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense"):
            kernel = np.asarray(layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel)
            names.append(layer.name)
            zeros.append(int(np.sum(kernel == 0)))
            sizes.append(kernel.size)
    return [[name, z / size] for name, z, size in zip(names, zeros, sizes)], sum(zeros) / max(sum(sizes), 1)


def cell_key(cell):
    """The identity of a cell: every field but its results."""
    return json.dumps({key: cell[key] for key in sorted(cell) if key not in RESULT_KEYS}, sort_keys=True)


RESULT_KEYS = ("accuracy", "sparsity", "layers", "seconds")


def architectures(data):
    """The grid's architectures on a data set: name -> (title, image size, epochs).

    Args:
        data: String, a key of `DATASETS` ("digits" or "fashion-mnist").

    Returns:
        A dict like `ARCHITECTURES`.
    """
    return DATASETS[data]["architectures"]


def cell_data(cell):
    """The data set a cell trains on: digits unless the cell names another (digits cells predate the key)."""
    return cell.get("data", "digits")


def load_data(size, limit, data="digits", train_size=None):
    """The training and test images of a cell, `size` x `size` x 3, as NumPy arrays.

    Args:
        size: Int. Image height and width.
        limit: Int or None. Keep at most this many training and test images (the quick mode).
        data: String, a key of `DATASETS`.
        train_size: Int or None. Fashion-MNIST only: a stratified subset of the training images.

    Returns:
        `x_train, y_train, x_test, y_test`.
    """
    (x_train, y_train), (x_test, y_test) = image_data(data, size, train_size=train_size, as_numpy=True)
    return x_train[:limit], y_train[:limit], x_test[:limit], y_test[:limit]


def run_cell(cell):
    """Trains one cell (a dict: architecture, optimizer, target, seed, method, start, epochs, ...); returns it with results."""
    import keras

    import tfprune

    started = time.perf_counter()
    architecture, size = cell["architecture"], architectures(cell_data(cell))[cell["architecture"]][1]
    x_train, y_train, x_test, y_test = load_data(size, cell.get("limit"), cell_data(cell), cell.get("train_size"))
    steps = -(-len(x_train) // BATCH_SIZE)
    epochs = cell["epochs"]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.backend.clear_session()
    keras.utils.set_random_seed(cell["seed"])
    model = build(architecture, keras, size)
    if cell["start"] == "dense":  # a dense model trained as long as the pruning run, then pruned
        model.compile(optimizer(keras, cell["optimizer"], steps * epochs), loss)
        model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
        keras.utils.set_random_seed(cell["seed"] + 1000)  # a fresh shuffle order for the pruning run
    callbacks = []
    method = cell["method"]
    if method.startswith("str"):
        variant = VARIANTS.get(method, {})
        layer_arguments = dict(variant.get("layer", {}))
        if "s_decay" in cell:  # the paper's recipe: no SparsityBudget, decay on s sets the sparsity
            layer_arguments.update(
                s_init=PAPER_S_INIT, threshold_regularizer=keras.regularizers.L2(cell["s_decay"])
            )
        else:
            callbacks.append(
                tfprune.callbacks.SparsityBudget(
                    cell["target"], ramp_epochs=RAMP_SHARE * epochs, update_every=UPDATE_EVERY, **variant.get("budget", {})
                )
            )
        model = tfprune.sparsify(model, **layer_arguments)
    elif method == "gmp":
        end_step = max(UPDATE_EVERY, int(RAMP_SHARE * epochs * steps) // UPDATE_EVERY * UPDATE_EVERY)
        schedule = tfprune.PolynomialDecay(0.0, cell["target"], 0, end_step, frequency=UPDATE_EVERY)
        model = tfprune.prune_low_magnitude(model, schedule)
        callbacks.append(tfprune.callbacks.UpdatePruningStep())
    model.compile(optimizer(keras, cell["optimizer"], steps * epochs), loss, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0, callbacks=callbacks)
    final = model if method == "dense" else tfprune.strip(model)
    final.compile(loss=loss, metrics=["accuracy"])
    layers, sparsity = kernel_sparsities(final)
    accuracy = 100 * final.evaluate(x_test, y_test, verbose=0)[1]
    return {**cell, "accuracy": accuracy, "sparsity": sparsity, "layers": layers,
            "seconds": time.perf_counter() - started}  # fmt: skip


def _run_cell_reporting_errors(cell):
    # One failing cell must not stop the others: report it, record nothing, go on.
    try:
        return run_cell(cell)
    except Exception as error:  # noqa: BLE001 - any failure of the cell is reported by name
        return {**cell, "error": f"{type(error).__name__}: {error}"}


def _worker_initializer():
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # the workers share the cores
    tf.config.threading.set_inter_op_parallelism_threads(1)


# ---------------------------------------------------------------------------
# TFMOT (runs under TF_USE_LEGACY_KERAS=1 with tf_keras and TFMOT).


def tfmot_worker(job):
    """Trains the plain CNN with TFMOT's prune_low_magnitude from the job's starting weights; returns the cell."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    data = np.load(job["data"])
    epochs, steps = job["epochs"], -(-len(data["x_train"]) // BATCH_SIZE)
    tf_keras.utils.set_random_seed(job["seed"])
    model = build("plain_cnn", tf_keras, job["size"])
    model.set_weights([data[f"weight_{index}"] for index in range(len(model.get_weights()))])
    end_step = max(UPDATE_EVERY, int(RAMP_SHARE * epochs * steps) // UPDATE_EVERY * UPDATE_EVERY)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, job["target"], 0, end_step, frequency=UPDATE_EVERY)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pruned.compile(optimizer(tf_keras, job["optimizer"], steps * epochs), loss, metrics=["accuracy"])
    pruned.fit(data["x_train"], data["y_train"], batch_size=BATCH_SIZE, epochs=epochs, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])  # fmt: skip
    final = tfmot.sparsity.keras.strip_pruning(pruned)
    final.compile(loss=loss, metrics=["accuracy"])
    layers, sparsity = kernel_sparsities(final)
    accuracy = 100 * final.evaluate(data["x_test"], data["y_test"], verbose=0)[1]
    return {**job["cell"], "accuracy": accuracy, "sparsity": sparsity, "layers": layers, "seconds": None}


WORKERS = {"tfmot": tfmot_worker}


def run_tfmot_cells(cells, interpreter):
    """Runs the TFMOT cells in one tf_keras process, from the Keras 3 models' starting weights."""
    import keras

    from benchmarks.str_vs_tfmot import run_tfmot

    jobs = []
    with tempfile.TemporaryDirectory() as directory:
        for index, cell in enumerate(cells):
            size = architectures(cell_data(cell))["plain_cnn"][1]
            x_train, y_train, x_test, y_test = load_data(size, cell.get("limit"), cell_data(cell), cell.get("train_size"))
            keras.utils.set_random_seed(cell["seed"])
            weights = build("plain_cnn", keras, size).get_weights()  # what the Keras 3 cells start from
            path = os.path.join(directory, f"cell_{index}.npz")
            np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                     **{f"weight_{i}": weight for i, weight in enumerate(weights)})  # fmt: skip
            jobs.append(dict(kind="tfmot", data=path, seed=cell["seed"], target=cell["target"],
                             optimizer=cell["optimizer"], epochs=cell["epochs"], size=size, cell=cell))  # fmt: skip
        return run_tfmot(interpreter, jobs, module="benchmarks.str_grid")


# ---------------------------------------------------------------------------
# Which cells, and the tables.


def _data_keys(data, train_size):
    # Digits cells carry no data keys, so the cell file of earlier runs keeps its keys.
    return {} if data == "digits" else {"data": data, "train_size": train_size}


def grid_cells(quick, data="digits", train_size=None):
    """The cells of the grid, most important first (a stopped run leaves the main grid done first).

    Args:
        quick: Bool. A handful of 1-epoch cells on 128 images.
        data: String, a key of `DATASETS`. On Fashion-MNIST the grid is the main grid and the dense
            references only (no ablation, dense starts or paper recipe).
        train_size: Int or None. Fashion-MNIST's training images per cell (None: all 60,000).

    Returns:
        A list of cell dicts.
    """
    limit = 128 if quick else None
    grid = architectures(data)

    def cell(architecture, optimizer_name, target, seed, method, start="scratch", **extra):
        epochs = 1 if quick else grid[architecture][2]
        return dict(architecture=architecture, optimizer=optimizer_name, target=target, seed=seed,
                    method=method, start=start, epochs=epochs, limit=limit, **_data_keys(data, train_size),
                    **extra)  # fmt: skip

    if quick:
        return [cell("plain_cnn", "adam", None, 0, "dense")] + [
            cell("plain_cnn", "adam", 0.9, 0, method) for method in ("str", "gmp", "str, no compensation")
        ] + [cell("plain_cnn", "sgd", None, 0, "str", s_decay=PAPER_DECAYS[-1])]  # fmt: skip
    main = [
        cell(architecture, optimizer_name, target, seed, method)
        for seed in (0, 1)
        for target in TARGETS
        for architecture in grid
        for optimizer_name in OPTIMIZERS
        for method in ("str", "gmp")
    ]
    dense = [cell(a, o, None, seed, "dense") for seed in (0, 1) for a in grid for o in OPTIMIZERS]
    if data != "digits":
        return main + dense
    ablation = [cell(a, o, 0.98, 0, variant) for a in ARCHITECTURES for o in OPTIMIZERS for variant in list(VARIANTS)[1:]]
    starts = [cell("plain_cnn", "adam", t, seed, m, start="dense") for seed in (0, 1) for t in TARGETS for m in ("str", "gmp")]
    paper = [cell("resnet_bn", "sgd", None, 0, "str", s_decay=decay) for decay in PAPER_DECAYS]
    return main + dense + ablation + starts + paper


def tfmot_cells(quick, data="digits", train_size=None):
    """The TFMOT cells: the plain CNN with Adam from scratch, every target and both seeds (arguments as `grid_cells`)."""
    epochs = 1 if quick else architectures(data)["plain_cnn"][2]
    seeds, targets = ((0,), TARGETS[:1]) if quick else ((0, 1), TARGETS)
    return [dict(architecture="plain_cnn", optimizer="adam", target=t, seed=s, method="tfmot", start="scratch",
                 epochs=epochs, limit=128 if quick else None, **_data_keys(data, train_size))
            for s in seeds for t in targets]  # fmt: skip


def third_seed_cells(results):
    """Seed 2 of both methods for every main-grid cell whose two means are within 2 points."""
    cells = []
    for (_, _, target, start), by_method in _grouped(results).items():
        if start != "scratch" or "str" not in by_method or "gmp" not in by_method or target is None:
            continue
        if abs(_mean(by_method["str"]) - _mean(by_method["gmp"])) < 2.0 and 2 not in {r["seed"] for r in by_method["str"]}:
            template = by_method["str"][0]
            for method in ("str", "gmp"):
                extra = {k: template[k] for k in template if k not in RESULT_KEYS}
                cells.append({**extra, "seed": 2, "method": method})
    return cells


# Points below the dense model from which a cell is listed as far from it.
FAR_FROM_DENSE = 10.0


def _grouped(results):
    groups = {}
    for result in results:
        if "s_decay" in result:
            continue
        key = (result["architecture"], result["optimizer"], result["target"], result["start"])
        groups.setdefault(key, {}).setdefault(result["method"], []).append(result)
    return groups


def _mean(runs):
    return float(np.mean([run["accuracy"] for run in runs]))


def _cell_text(runs):
    if not runs:
        return "–"
    values = [run["accuracy"] for run in runs]
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def tables(results, quick):
    """The Markdown lines of the section (without heading and command) from the finished cells."""
    titles = architectures(next((cell_data(r) for r in results), "digits"))
    groups = _grouped(results)
    dense = {(a, o): runs.get("dense", []) for (a, o, t, s), runs in groups.items() if t is None}
    lines = [
        "| Model | Optimizer | Dense | Target | STR (tfprune) | GMP (tfprune) | STR − GMP | Seeds | STR emptied layers |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    behind, collapsed, far, by_target = [], [], [], {}
    for architecture in titles:
        for optimizer_name in OPTIMIZERS:
            for target in TARGETS:
                runs = groups.get((architecture, optimizer_name, target, "scratch"), {})
                ours, theirs = runs.get("str", []), runs.get("gmp", [])
                if not ours or not theirs:
                    continue
                difference = _mean(ours) - _mean(theirs)
                by_target.setdefault(target, []).append((_mean(ours), _mean(theirs)))
                emptied = np.mean([sum(s == 1.0 for _, s in run["layers"]) for run in ours])
                lines.append(
                    f"| {titles[architecture][0]} | {optimizer_name} | {_cell_text(dense.get((architecture, optimizer_name)))} "
                    f"| {100 * target:.0f}% | {_cell_text(ours)} | {_cell_text(theirs)} | {difference:+.1f} "
                    f"| {len(ours)} | {emptied:.1f} |"
                )
                name = f"{titles[architecture][0]}, {optimizer_name}, {100 * target:.0f}%"
                if difference < -1.0:
                    behind.append(f"- {name}: STR {-difference:.1f} points below GMP.")
                if _mean(ours) <= CHANCE:
                    collapsed.append(f"- {name}: STR at {_mean(ours):.1f}% (chance).")
                reference = dense.get((architecture, optimizer_name))
                if reference and _mean(reference) - _mean(ours) > FAR_FROM_DENSE:
                    far.append(f"- {name}: STR {_mean(ours):.1f}% against {_mean(reference):.1f}% dense "
                               f"(GMP {_mean(theirs):.1f}%).")  # fmt: skip
    lines += ["", "Mean over the grid's cells at each target:", "",
              "| Target | STR | GMP | STR − GMP | Cells |", "| ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for target, pairs in sorted(by_target.items()):
        ours, theirs = np.mean([p[0] for p in pairs]), np.mean([p[1] for p in pairs])
        lines.append(f"| {100 * target:.0f}% | {ours:.1f} | {theirs:.1f} | {ours - theirs:+.1f} | {len(pairs)} |")
    lines += ["", "Where STR is behind (cells with STR's mean more than 1 point below GMP's, or at chance):", "",
              *(behind + collapsed or ["- Nowhere in this run."]), "",
              f"Where STR is still far from the dense model (more than {FAR_FROM_DENSE:.0f} points below it):", "",
              *(far or ["- Nowhere in this run."]), ""]  # fmt: skip
    lines += _start_table(groups) + _ablation_table(groups, titles) + _paper_table(results) + _layer_lines(groups, titles)
    return lines


def _start_table(groups):
    rows = []
    for target in TARGETS:
        cells = {start: groups.get(("plain_cnn", "adam", target, start), {}) for start in ("scratch", "dense")}
        if not cells["dense"]:
            continue
        rows.append(
            f"| {100 * target:.0f}% | {_cell_text(cells['scratch'].get('str', []))} | {_cell_text(cells['scratch'].get('gmp', []))} "
            f"| {_cell_text(cells['scratch'].get('tfmot', []))} | {_cell_text(cells['dense'].get('str', []))} "
            f"| {_cell_text(cells['dense'].get('gmp', []))} |"
        )
    if not rows:
        return []
    return ["Plain CNN with Adam, from scratch and from a dense-trained start (the dense model trained as many epochs "
            "as the pruning run, then pruned for those epochs again); TFMOT 0.8.1 from the same starting weights "
            "as the scratch cells:", "",
            "| Target | STR, scratch | GMP, scratch | TFMOT, scratch | STR, dense start | GMP, dense start |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |", *rows, ""]  # fmt: skip


def _ablation_table(groups, titles):
    rows = []
    for (architecture, optimizer_name, target, start), runs in sorted(groups.items(), key=str):
        variants = [[r for r in runs.get(v, []) if r["seed"] == 0] for v in VARIANTS]
        if start != "scratch" or not any(variants[1:]):
            continue
        gmp = [r for r in runs.get("gmp", []) if r["seed"] == 0]
        cells = [_ablation_cell(v) for v in variants + [gmp]]
        rows.append(f"| {titles[architecture][0]} | {optimizer_name} | {100 * target:.0f}% | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["Ablation, seed 0: test accuracy (emptied layers). 'No compensation': STR layers with "
            "`compensate_shrinkage=False` (the paper's soft threshold); 'no floor': `SparsityBudget(min_layer_density=0.0)`; "
            "'neither' is STR as tfprune 0.1 shipped it; 'uniform start': `SparsityBudget(start=\"uniform\")`.", "",
            "| Model | Optimizer | Target | " + " | ".join(VARIANTS) + " | GMP |",
            "| --- | --- | ---: | " + " | ".join("---:" for _ in VARIANTS) + " | ---: |", *rows, ""]  # fmt: skip


def _ablation_cell(runs):
    if not runs:
        return "–"
    emptied = sum(s == 1.0 for _, s in runs[0]["layers"])
    return f"{runs[0]['accuracy']:.1f} ({emptied})"


def _paper_table(results):
    rows = [
        f"| {run['s_decay']:g} | {100 * run['sparsity']:.1f}% | {run['accuracy']:.1f} |"
        for run in sorted((r for r in results if "s_decay" in r), key=lambda r: r["s_decay"])
    ]
    if not rows:
        return []
    return ["The paper's recipe without `SparsityBudget`: STR layers (`s_init=-5`) with `threshold_regularizer=L2(λ)` "
            "on `s`, SGD with momentum and cosine decay, residual CNN with BatchNormalization (plain CNN in --quick), "
            "seed 0. The final sparsity is whatever λ, `s_init` and the schedule give:", "",
            "| λ (L2 on s) | Final sparsity | Test accuracy (%) |", "| ---: | ---: | ---: |", *rows, ""]  # fmt: skip


def _layer_lines(groups, titles):
    lines = []
    for architecture in titles:
        runs = groups.get((architecture, "adam", 0.95, "scratch"), {}).get("str", [])
        run = next((r for r in runs if r["seed"] == 0), None)
        if run:
            listed = ", ".join(f"{name} {100 * s:.0f}%" for name, s in run["layers"])
            lines.append(f"- {titles[architecture][0]}: {listed}.")
    if not lines:
        return []
    return ["STR's learned per-layer sparsity at 95% with Adam, seed 0 (GMP puts every layer at 95%):", "", *lines, ""]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="plain CNN, Adam, 90%%, 1 seed, 1 epoch on 128 images")
    parser.add_argument("--workers", type=int, default=2, help="training processes (default 2, one thread each)")
    parser.add_argument("--cells", default=None, help=f"JSON-lines file of finished cells (default {CELLS.name}; "
                        "a temporary file with --quick)")  # fmt: skip
    parser.add_argument("--table-only", action="store_true", help="write the section from --cells, train nothing")
    parser.add_argument("--data", choices=sorted(DATASETS), default="digits",
                        help="digits (default, bundled) or fashion-mnist (`make fashion-mnist`; its own section "
                        "and cell file)")  # fmt: skip
    parser.add_argument("--train-size", type=int, default=FASHION_TRAIN_SIZE,
                        help=f"fashion-mnist: training images per cell, a stratified subset (default "
                        f"{FASHION_TRAIN_SIZE}; 60000 for all)")  # fmt: skip
    add_tfmot_arguments(parser)
    args = parser.parse_args(argv)
    setting = DATASETS[args.data]
    train_size = None if args.data == "digits" or args.train_size >= 60000 else args.train_size
    cells = {"grid": lambda quick: grid_cells(quick, args.data, train_size),
             "tfmot": lambda quick: tfmot_cells(quick, args.data, train_size)}
    if args.tfmot_worker:
        return serve_tfmot_jobs(args.tfmot_worker, WORKERS)
    from benchmarks.tfmot_compare import tfmot_python

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        path = pathlib.Path(args.cells or (os.path.join(directory, "cells.jsonl") if args.quick else setting["cells"]))
        done = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        finished = {cell_key(result) for result in done}
        failures = []

        def run(cells, workers):
            todo = [cell for cell in cells if cell_key(cell) not in finished]
            print(f"{len(todo)} cells to train ({len(cells) - len(todo)} already in {path})", flush=True)
            if not todo:
                return
            context = multiprocessing.get_context("spawn")
            with context.Pool(max(1, workers), initializer=_worker_initializer, maxtasksperchild=8) as pool:
                for result in pool.imap_unordered(_run_cell_reporting_errors, todo):
                    if "error" in result:
                        failures.append(result)
                        print(f"FAILED {cell_key(result)}: {result['error']}", flush=True)
                    else:
                        record(result)

        def record(result):
            done.append(result)
            finished.add(cell_key(result))
            with path.open("a") as stream:
                stream.write(json.dumps(result) + "\n")
            print(f"{result['architecture']} {result['optimizer']} {result['target']} seed {result['seed']} "
                  f"{result['method']} {result['start']}: {result['accuracy']:.1f}% at {100 * result['sparsity']:.1f}%",
                  flush=True)  # fmt: skip

        if not args.table_only:
            run(cells["grid"](args.quick), 1 if args.quick else args.workers)
            todo = [cell for cell in cells["tfmot"](args.quick) if cell_key(cell) not in finished]
            if todo:
                for result in run_tfmot_cells(todo, tfmot_python(args.tfmot_python)):
                    record(result)
            if not args.quick:
                run(third_seed_cells(done), args.workers)
        planned_cells = cells["grid"](args.quick) + cells["tfmot"](args.quick)
        expected = len(planned_cells)
        planned = {cell_key(cell) for cell in planned_cells}
        missing = len(planned - finished)
        minutes = (time.perf_counter() - started) / 60
        # The command that trains the cells (a --table-only rewrite trains none).
        training_argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--table-only"]
        trained = sum(r["seconds"] or 0 for r in done) / 60
        text = [
            setting["section"], "",
            f"Command: `{command_line('benchmarks.str_grid', training_argv)}` ({machine()}; "
            + ("section rewritten from the cell file by --table-only; " if args.table_only
               else f"this invocation {minutes:.0f} min; ")
            + f"the {len(done)} cells took {trained:.0f} min of training in all, in {args.workers} worker process(es) "
            "of one thread each).", "",
            *([f"**Partial run: {expected - missing} of the {expected} planned cells (third seeds aside) are finished; "
               "the tables hold only those. Rerun the command to train the rest (finished cells are kept).**", ""]
              if missing else []),
            f"{setting['description']}"
            + (f", {train_size or 60000} training images (a stratified subset: see `FASHION_TRAIN_SIZE` in the "
               "script for why)" if args.data != "digits" else "")
            + ", batch 64, trained from scratch unless stated. STR is tfprune's "
            "recommended usage, `tfprune.sparsify(model)` + `SparsityBudget(target)` with their defaults "
            "(`compensate_shrinkage=True`, `min_layer_density=(1 - target) / 4`); GMP is "
            "`tfprune.prune_low_magnitude(model, PolynomialDecay(0, target))` (a uniform budget). Both prune every "
            f"Conv2D, DepthwiseConv2D and Dense kernel, ramp sparsity over the first {RAMP_SHARE:.0%} of the epochs "
            f"along the same cubic curve, update every {UPDATE_EVERY} steps, and start from the same weights. "
            "Test accuracy in %, mean ± std over seeds; 'STR emptied layers': kernels left with no non-zero weight. "
            "Epochs: " + "; ".join(f"{title}: {epochs}" for title, _, epochs in architectures(args.data).values())
            + ".", "",
            *tables(done, args.quick),
        ]  # fmt: skip
        if failures:
            text += ["Cells that failed (not in the tables):", "",
                     *[f"- {cell_key(f)}: {f['error']}" for f in failures], ""]  # fmt: skip
        write_section(setting["section"], "\n".join(text))
        print("\n".join(text))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
