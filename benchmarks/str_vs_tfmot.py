"""STR with SparsityBudget next to TFMOT's gradual magnitude pruning: accuracy, MACs, step time.

Usage: `.venv/bin/python -m benchmarks.str_vs_tfmot [--quick] [--architectures NAME ...] [--seeds N]
[--tfmot-python PATH]`.
Writes the `## STR vs TFMOT: accuracy` and `## STR vs TFMOT: step time`
sections of the results file (`benchmarks.common.results_path()`).

Table 1. For each architecture (the small CNN of `benchmarks.tfmot_compare`
and MobileNetV3-Small at 32x32, both defined once in this module and built
with Keras 3 and with tf_keras alike) and each seed, a dense model is trained
in Keras 3; both methods then start from those weights and train the same
number of epochs with the same optimizer and batch size, reaching each target
sparsity over every Conv2D and Dense kernel (TFMOT 0.8 prunes no
DepthwiseConv2D weights, so those stay dense on both sides):

- tfprune: `tfprune.sparsify` (STR layers) and
  `tfprune.callbacks.SparsityBudget(target)`, whose ramp is the cubic one of
  gradual magnitude pruning and whose per-layer budget is learned.
- TFMOT: `prune_low_magnitude` on the same layers with
  `PolynomialDecay(0 -> target)` (cubic) over the same share of the steps;
  every layer reaches the same sparsity (a uniform budget).

The MACs of each method's budget are the kernel multiply-accumulates that
touch a non-zero weight, next to those of the uniform budget (every layer at
the target). The TFMOT side runs in its own process under
`TF_USE_LEGACY_KERAS=1` with the interpreter chosen by
`benchmarks.tfmot_compare.tfmot_python`. For architectures with depthwise
layers, a further STR run per seed and target prunes the DepthwiseConv2D
kernels too (what TFMOT cannot do) and its table names the depthwise layers
that SparsityBudget empties.

Table 2. `train_on_batch` step time of the plain model, of its STR version
(alone and with SparsityBudget's per-batch rescaling) and, in the TFMOT
process, of the plain tf_keras model and of its pruning wrappers (with the
step counter that UpdatePruningStep advances): medians over interleaved runs,
each as a ratio to the plain model of the same process.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import command_line, machine, write_section
from benchmarks.tfmot_compare import FREQUENCY, ROOT, build_cnn, tfmot_python

ACCURACY_SECTION = "## STR vs TFMOT: accuracy"
STEP_TIME_SECTION = "## STR vs TFMOT: step time"
TARGETS = (0.9, 0.95, 0.98)
LEARNING_RATE = 1e-3
RAMP_SHARE = 2 / 3  # share of the pruning epochs over which sparsity rises (both methods)
# TFMOT 0.8 wraps DepthwiseConv2D but prunes none of its weights (its registry lists
# `DepthwiseConv2D: []`), so both methods prune the Conv2D and Dense kernels and
# leave the depthwise ones dense: the comparison is over the same weights.
PRUNABLE = ("Conv2D", "Dense")
BN_MOMENTUM = 0.9  # as tfprune.models.mobilenet_v3: 0.999 leaves short runs at chance


def build_mobilenet_v3_small(keras_module):
    """MobileNetV3-Small for 32x32x3 digits, built with Keras 3 or with tf_keras alike.

    The same network as `tfprune.models.mobilenet_v3("small")`: no Rescaling,
    BatchNormalization momentum 0.9, softmax output.

    Args:
        keras_module: The `keras` or the `tf_keras` package.

    Returns:
        A functional model from 32x32x3 images to 10 probabilities.
    """
    model = keras_module.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), classes=10, weights=None, include_preprocessing=False
    )
    for layer in model.layers:
        if isinstance(layer, keras_module.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    return model


# name -> (title, builder, image size, channels, from_logits, batch size, (dense, pruning) epochs)
ARCHITECTURES = {
    "cnn": ("CNN Conv2D(32)-MaxPool-Conv2D(64)-Dense(128)-Dense(10), 8x8x1", build_cnn, 8, 1, True, 32, (10, 10)),
    "mobilenet_v3_small": ("MobileNetV3-Small, 32x32x3", build_mobilenet_v3_small, 32, 3, False, 64, (6, 8)),
}


def layers_of(model, kinds):
    """The layers of a model whose class name is in `kinds`, in layer order."""
    return [layer for layer in model.layers if type(layer).__name__ in kinds]


def prunable_layers(model):
    """The layers both methods prune (Conv2D and Dense, see `PRUNABLE`), in layer order."""
    return layers_of(model, PRUNABLE)


def kernel_of(layer):
    """The kernel of a prunable layer as a NumPy array (tf_keras names the depthwise one apart)."""
    kernel = getattr(layer, "depthwise_kernel", None)
    return np.asarray(kernel if kernel is not None else layer.kernel)


def layer_sparsities(model, kinds=PRUNABLE):
    """Share of exact zeros in the kernel of each layer of `kinds` (class names), and over all of them."""
    kernels = [kernel_of(layer) for layer in layers_of(model, kinds)]
    zeros = [float(np.sum(kernel == 0)) for kernel in kernels]
    return [z / kernel.size for z, kernel in zip(zeros, kernels)], sum(zeros) / sum(k.size for k in kernels)


def compiled(model, keras_module, from_logits):
    """Compiles with the optimizer, loss and metric both methods share; returns the model."""
    model.compile(
        optimizer=keras_module.optimizers.Adam(LEARNING_RATE),
        loss=keras_module.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )
    return model


def tfmot_schedule_arguments(target, pruning_epochs, steps_per_epoch):
    """PolynomialDecay arguments: 0 -> target over the first `RAMP_SHARE` of the pruning steps."""
    end_step = max(FREQUENCY, int(RAMP_SHARE * pruning_epochs * steps_per_epoch) // FREQUENCY * FREQUENCY)
    return dict(initial_sparsity=0.0, final_sparsity=target, begin_step=0, end_step=end_step, frequency=FREQUENCY)


def interleaved_step_times(steppers, runs, steps):
    """Times `steps` calls of each stepper per run, alternating their order; seconds per step.

    Args:
        steppers: Dict name -> callable doing one training step.
        runs: Int. Timed runs per stepper.
        steps: Int. Steps per timed run.

    Returns:
        Dict name -> list of `runs` seconds-per-step values.
    """
    for step in steppers.values():  # trace and compile before timing
        for _ in range(2):
            step()
    times = {name: [] for name in steppers}
    for run in range(runs):
        for name in list(steppers)[:: 1 if run % 2 == 0 else -1]:
            start = time.perf_counter()
            for _ in range(steps):
                steppers[name]()
            times[name].append((time.perf_counter() - start) / steps)
    return times


def random_batch(architecture, batch_size):
    """A fixed random batch of images and labels for the step-time runs."""
    _, _, size, channels, *_ = ARCHITECTURES[architecture]
    rng = np.random.default_rng(0)
    return rng.uniform(size=(batch_size, size, size, channels)).astype("float32"), rng.integers(0, 10, batch_size)


# ---------------------------------------------------------------------------
# The TFMOT side (runs under TF_USE_LEGACY_KERAS=1 with tf_keras and TFMOT).


def tfmot_pruned(model, schedule_arguments):
    """Wraps the prunable layers of a tf_keras model in TFMOT's `prune_low_magnitude`."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    schedule = tfmot.sparsity.keras.PolynomialDecay(**schedule_arguments)

    def wrap(layer):
        if type(layer).__name__ in PRUNABLE:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer  # shared, so its weights (e.g. BatchNormalization statistics) come along

    return tf_keras.models.clone_model(model, clone_function=wrap)


def tfmot_accuracy_worker(job):
    """Prunes the dense models of `job` with TFMOT at every target; returns one dict per run."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    _, build, _, _, from_logits, batch_size, _ = ARCHITECTURES[job["architecture"]]
    data = np.load(job["data"])
    steps_per_epoch = -(-len(data["x_train"]) // batch_size)
    results = []
    for seed in job["seeds"]:
        for target in job["targets"]:
            tf_keras.backend.clear_session()
            tf_keras.utils.set_random_seed(seed)
            model = build(tf_keras)
            model.set_weights([data[f"seed_{seed}_weight_{index}"] for index in range(len(model.get_weights()))])
            dense_accuracy = compiled(model, tf_keras, from_logits).evaluate(data["x_test"], data["y_test"], verbose=0)[1]
            arguments = tfmot_schedule_arguments(target, job["pruning_epochs"], steps_per_epoch)
            pruned = compiled(tfmot_pruned(model, arguments), tf_keras, from_logits)
            pruned.fit(
                data["x_train"], data["y_train"], batch_size=batch_size, epochs=job["pruning_epochs"],
                verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
            )  # fmt: skip
            stripped = compiled(tfmot.sparsity.keras.strip_pruning(pruned), tf_keras, from_logits)
            per_layer, overall = layer_sparsities(stripped)
            accuracy = stripped.evaluate(data["x_test"], data["y_test"], verbose=0)[1]
            results.append(dict(seed=seed, target=target, accuracy=accuracy, sparsity=overall, layers=per_layer,
                                dense_accuracy=dense_accuracy))  # fmt: skip
    return results


def check_same_dense_model(title, keras_accuracies, tfmot_runs):
    """Raises unless the tf_keras twin, given the Keras 3 dense weights, scores what the Keras 3 model scored.

    Both methods must start from the same network: a weight copied into the
    wrong variable of the twin would show as a different dense accuracy.

    Args:
        title: String. The architecture's title, for the message.
        keras_accuracies: List of the Keras 3 dense test accuracies (percent), one per seed.
        tfmot_runs: The TFMOT worker's result dicts (fractions in "dense_accuracy", seeds in "seed").

    Raises:
        RuntimeError: If a seed's accuracies differ by more than one test image in 200.

    Example:

    >>> check_same_dense_model("CNN", [95.0], [dict(seed=0, dense_accuracy=0.95)])
    >>> check_same_dense_model("CNN", [95.0], [dict(seed=0, dense_accuracy=0.90)])
    Traceback (most recent call last):
    ...
    RuntimeError: CNN, seed 0: the tf_keras twin with the Keras 3 dense weights scores 90.00%, not 95.00%; ...
    """
    for run in tfmot_runs:
        ours, theirs = keras_accuracies[run["seed"]], 100 * run["dense_accuracy"]
        if abs(ours - theirs) > 0.5:
            raise RuntimeError(
                f"{title}, seed {run['seed']}: the tf_keras twin with the Keras 3 dense weights scores "
                f"{theirs:.2f}%, not {ours:.2f}%; the two builds of the architecture do not hold the same "
                "weights in the same order, so the comparison would not start from the same model."
            )


def tfmot_step_time_worker(job):
    """Step times of a plain tf_keras model and of its TFMOT wrappers; seconds per step."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    _, build, _, _, from_logits, batch_size, _ = ARCHITECTURES[job["architecture"]]
    images, labels = random_batch(job["architecture"], batch_size)
    tf_keras.utils.set_random_seed(0)
    plain = compiled(build(tf_keras), tf_keras, from_logits)
    arguments = tfmot_schedule_arguments(0.9, 10, 1000)  # mid-ramp: masks move every FREQUENCY steps
    pruned = compiled(tfmot_pruned(build(tf_keras), arguments), tf_keras, from_logits)
    callback = tfmot.sparsity.keras.UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()

    def pruned_step():
        callback.on_train_batch_begin(0)  # what fit does before every batch
        pruned.train_on_batch(images, labels)

    times = interleaved_step_times(
        {"tf_keras plain": lambda: plain.train_on_batch(images, labels), "TFMOT prune_low_magnitude": pruned_step},
        job["runs"],
        job["steps"],
    )
    versions = f"tensorflow {tf.__version__}, tf_keras {tf_keras.__version__}, tensorflow-model-optimization {tfmot.__version__}"
    return dict(times=times, versions=versions)


WORKERS = {"accuracy": tfmot_accuracy_worker, "step_time": tfmot_step_time_worker}


def add_tfmot_arguments(parser):
    """Adds `--tfmot-python` and the hidden `--tfmot-worker` (what `run_tfmot` calls) to a script's parser."""
    parser.add_argument("--tfmot-python", default=None, help="interpreter with tf_keras and TFMOT")
    parser.add_argument("--tfmot-worker", nargs=2, metavar=("JOB_JSON", "OUTPUT_JSON"), help=argparse.SUPPRESS)


def serve_tfmot_jobs(paths, workers):
    """The `--tfmot-worker JOBS OUTPUT` side of `run_tfmot`: runs each job with `workers[job["kind"]]`; returns 0."""
    jobs = json.loads(pathlib.Path(paths[0]).read_text())
    pathlib.Path(paths[1]).write_text(json.dumps([workers[job["kind"]](job) for job in jobs]))
    return 0


def run_tfmot(interpreter, jobs, module="benchmarks.str_vs_tfmot"):
    """Runs TFMOT jobs in one subprocess with `TF_USE_LEGACY_KERAS=1`; returns their JSON results.

    The subprocess is `module --tfmot-worker JOBS OUTPUT`: the module's own
    worker functions run each job.
    """
    with tempfile.TemporaryDirectory() as directory:
        job_path, output_path = (os.path.join(directory, name) for name in ("jobs.json", "output.json"))
        pathlib.Path(job_path).write_text(json.dumps(jobs))
        environment = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [interpreter, "-m", module, "--tfmot-worker", job_path, output_path]
        if subprocess.run(command, cwd=ROOT, env=environment).returncode != 0:
            raise RuntimeError(
                f"The TFMOT side failed with interpreter {interpreter}; it needs tf_keras and "
                "tensorflow-model-optimization (`make bench` creates .venv-tfmot with them, or pass "
                "--tfmot-python)."
            )
        return json.loads(pathlib.Path(output_path).read_text())


# ---------------------------------------------------------------------------
# The tfprune side (Keras 3).


def str_model(model, depthwise=False):
    """`tfprune.sparsify` of a Keras 3 model: STR in place of the `PRUNABLE` layers, and the depthwise ones if asked."""
    import tfprune

    if depthwise:
        return tfprune.sparsify(model)
    return tfprune.sparsify(model, skip=[layer.name for layer in layers_of(model, ("DepthwiseConv2D",))])


def has_depthwise(model):
    """Whether a model has a DepthwiseConv2D layer."""
    return bool(layers_of(model, ("DepthwiseConv2D",)))


def run_str(architecture, data, dense_weights, seed, target, pruning_epochs, depthwise=False):
    """Trains the STR version of the dense model to `target`; returns accuracy and sparsities.

    With `depthwise`, the DepthwiseConv2D kernels are STR layers too and the
    result also holds their sparsities ("depthwise") and the sparsity over all
    three kinds of kernel ("sparsity_all").
    """
    import keras

    import tfprune

    _, build, _, _, from_logits, batch_size, _ = ARCHITECTURES[architecture]
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build(keras)
    model.set_weights(dense_weights)
    sparse = compiled(str_model(model, depthwise), keras, from_logits)
    budget = tfprune.callbacks.SparsityBudget(target, ramp_epochs=RAMP_SHARE * pruning_epochs, update_every=FREQUENCY)
    sparse.fit(data["x_train"], data["y_train"], batch_size=batch_size, epochs=pruning_epochs, verbose=0, callbacks=[budget])
    stripped = compiled(tfprune.strip(sparse), keras, from_logits)
    per_layer, overall = layer_sparsities(stripped)
    accuracy = stripped.evaluate(data["x_test"], data["y_test"], verbose=0)[1]
    run = dict(seed=seed, target=target, accuracy=accuracy, sparsity=overall, layers=per_layer)
    if depthwise:
        run["depthwise"] = layer_sparsities(stripped, ("DepthwiseConv2D",))[0]
        run["sparsity_all"] = layer_sparsities(stripped, PRUNABLE + ("DepthwiseConv2D",))[1]
    return run


def train_dense(architecture, data, seed, dense_epochs):
    """Trains the dense Keras 3 model; returns (weights, test accuracy, per-layer MACs)."""
    import keras

    import tfprune

    _, build, _, _, from_logits, batch_size, _ = ARCHITECTURES[architecture]
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = compiled(build(keras), keras, from_logits)
    model.fit(data["x_train"], data["y_train"], batch_size=batch_size, epochs=dense_epochs, verbose=0)
    accuracy = model.evaluate(data["x_test"], data["y_test"], verbose=0)[1]
    analysis = tfprune.analyze(model)
    macs = [analysis[layer.name].macs for layer in prunable_layers(model)]
    return model.get_weights(), accuracy, macs


def str_step_times(architecture, runs, steps):
    """Step times of the plain Keras 3 model, its STR version, and STR with SparsityBudget."""
    import keras

    import tfprune

    _, build, _, _, from_logits, batch_size, _ = ARCHITECTURES[architecture]
    images, labels = random_batch(architecture, batch_size)
    keras.utils.set_random_seed(0)
    plain = compiled(build(keras), keras, from_logits)
    sparse = compiled(str_model(plain), keras, from_logits)
    budgeted = compiled(str_model(plain), keras, from_logits)
    budget = tfprune.callbacks.SparsityBudget(0.9, ramp_epochs=1.0, update_every=FREQUENCY)
    budget.set_model(budgeted)
    budget.set_params({"epochs": 1, "steps": 10**6})
    budget.on_train_begin()
    batches = iter(range(10**6))

    def budgeted_step():
        budgeted.train_on_batch(images, labels)
        budget.on_train_batch_end(next(batches))  # what fit does after every batch

    return interleaved_step_times(
        {
            "Keras 3 plain": lambda: plain.train_on_batch(images, labels),
            "STR layers (`tfprune.sparsify`)": lambda: sparse.train_on_batch(images, labels),
            f"STR + `SparsityBudget` (update_every={FREQUENCY})": budgeted_step,
        },
        runs,
        steps,
    )


# ---------------------------------------------------------------------------
# Tables.


def accuracy_rows(title, dense_accuracies, macs, results, targets):
    """Markdown rows of table 1 for one architecture: one row per (target, method)."""
    total_macs = sum(macs)
    rows = []
    for target in targets:
        uniform = total_macs * (1 - target)
        for method, runs in results.items():
            runs = [run for run in runs if run["target"] == target]
            accuracies = [100 * run["accuracy"] for run in runs]
            budget_macs = [sum(m * (1 - s) for m, s in zip(macs, run["layers"])) for run in runs]
            rows.append(
                f"| {title} | {100 * target:.0f}% | {method} | {np.mean(accuracies):.2f} ± {np.std(accuracies):.2f} | "
                f"{100 * np.mean([run['sparsity'] for run in runs]):.2f}% | "
                f"{np.mean([sum(s == 1.0 for s in run['layers']) for run in runs]):.1f} of {len(macs)} | "
                f"{np.mean(budget_macs) / 1e6:.3f} M | "
                f"{uniform / 1e6:.3f} M | {np.mean(budget_macs) / uniform:.2f} |"
            )
    return [f"| {title} | 0% | dense | {np.mean(dense_accuracies):.2f} ± {np.std(dense_accuracies):.2f} | 0% | | "
            f"{total_macs / 1e6:.3f} M | | |", *rows]  # fmt: skip


def behind(results, targets, macs):
    """Sentences naming every (architecture, target) where STR is below TFMOT in accuracy or above it in MACs."""
    sentences = []
    for title, by_method in results.items():
        for target in targets:
            runs = {method: [r for r in by_method[method] if r["target"] == target] for method in by_method}
            accuracy = {m: 100 * np.mean([r["accuracy"] for r in rs]) for m, rs in runs.items()}
            cost = {m: np.mean([sum(c * (1 - s) for c, s in zip(macs[title], r["layers"])) for r in rs]) for m, rs in runs.items()}
            if accuracy["tfprune STR"] < accuracy["TFMOT"]:
                sentences.append(f"- {title} at {100 * target:.0f}%: tfprune STR's accuracy is behind TFMOT's by "
                                 f"{accuracy['TFMOT'] - accuracy['tfprune STR']:.2f} points.")  # fmt: skip
            if cost["tfprune STR"] > cost["TFMOT"]:
                sentences.append(f"- {title} at {100 * target:.0f}%: tfprune STR's learned budget needs "
                                 f"{cost['tfprune STR'] / cost['TFMOT']:.2f}x TFMOT's MACs (same parameter count; "
                                 "STR keeps more weights in the layers that cost most MACs per weight).")  # fmt: skip
    return sentences or ["- Nowhere in this run: tfprune STR is neither less accurate nor costlier in MACs than TFMOT."]


def depthwise_table(runs_by_title, targets):
    """Markdown lines for STR with the DepthwiseConv2D kernels pruned too (what TFMOT 0.8 cannot do).

    Args:
        runs_by_title: Dict architecture title -> list of `run_str(..., depthwise=True)`
            results (empty for architectures without depthwise layers).
        targets: The target sparsities.

    Returns:
        List of strings: an explanation, a table with one row per (architecture,
        target) and one sentence per row where a depthwise layer was emptied;
        `[]` when no architecture has such runs.

    Example:

    >>> runs = [dict(target=0.9, accuracy=0.5, sparsity_all=0.9, depthwise=[1.0, 0.5])]
    >>> depthwise_table({"Net": runs}, [0.9])[-2]
    '- Net at 90%: SparsityBudget emptied 1.0 of 2 DepthwiseConv2D layers (test accuracy 50.00%).'
    """
    rows, sentences = [], []
    for title, runs in runs_by_title.items():
        for target in targets:
            at_target = [run for run in runs if run["target"] == target]
            if not at_target:
                continue
            accuracy = np.mean([100 * run["accuracy"] for run in at_target])
            emptied = np.mean([sum(s == 1.0 for s in run["depthwise"]) for run in at_target])
            count = len(at_target[0]["depthwise"])
            rows.append(
                f"| {title} | {100 * target:.0f}% | {accuracy:.2f} ± {np.std([100 * r['accuracy'] for r in at_target]):.2f} | "
                f"{100 * np.mean([run['sparsity_all'] for run in at_target]):.2f}% | "
                f"{100 * np.mean([np.mean(run['depthwise']) for run in at_target]):.1f}% | {emptied:.1f} of {count} |"
            )
            if emptied > 0:
                sentences.append(f"- {title} at {100 * target:.0f}%: SparsityBudget emptied {emptied:.1f} of {count} "
                                 f"DepthwiseConv2D layers (test accuracy {accuracy:.2f}%).")  # fmt: skip
    if not rows:
        return []
    return [
        "STR with the DepthwiseConv2D kernels pruned too (`tfprune.sparsify(model)` with no `skip`; TFMOT 0.8 cannot "
        "prune them), same dense weights, epochs and SparsityBudget; the target now counts every Conv2D, "
        "DepthwiseConv2D and Dense kernel. 'Emptied': depthwise layers left with no non-zero weight (mean over seeds).",
        "",
        "| Model | Target | Test accuracy (%) | Achieved sparsity (all kernels) | Mean depthwise sparsity | Emptied depthwise layers |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *rows, "",
        *(["Where pruning the depthwise kernels goes wrong (an emptied depthwise layer cuts the network; keep them "
           "dense with `tfprune.sparsify(model, skip=[...their names])`, as the table above does):", "", *sentences]
          if sentences else ["No depthwise layer was emptied in this run."]),
        "",
    ]  # fmt: skip


def step_time_behind(title, medians):
    """Sentences for an architecture whose STR step-time ratio exceeds TFMOT's (each to its own plain model).

    Args:
        title: String. The architecture's title.
        medians: Dict variant name -> median seconds per step, with the keys of
            `str_step_times` ("Keras 3 plain" first, then the STR variants) and
            of the TFMOT worker ("tf_keras plain", "TFMOT prune_low_magnitude").

    Returns:
        List of Markdown bullet strings (empty when no STR variant's ratio exceeds TFMOT's).

    Example:

    >>> step_time_behind("CNN", {"Keras 3 plain": 1.0, "STR layers": 1.3, "tf_keras plain": 5.0,
    ...                          "TFMOT prune_low_magnitude": 5.1})[0][:53]
    '- CNN: STR layers 1.30x a plain Keras 3 step vs TFMOT'
    """
    plain = medians["Keras 3 plain"]
    theirs = medians["TFMOT prune_low_magnitude"]
    theirs_ratio = theirs / medians["tf_keras plain"]
    ours = {name: value for name, value in medians.items() if name.startswith("STR")}
    slower = {name: value / plain for name, value in ours.items() if value / plain > theirs_ratio}
    if not slower:
        return []
    absolute = "every STR step is faster" if max(ours.values()) < theirs else "the slowest STR step is not faster"
    return [
        f"- {title}: " + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in slower.items())
        + f" a plain Keras 3 step vs TFMOT {theirs_ratio:.2f}x a plain tf_keras step (STR trains its thresholds, "
        f"TFMOT multiplies by a fixed mask). In absolute time {absolute} than TFMOT's "
        f"({1000 * max(ours.values()):.1f} ms at most vs {1000 * theirs:.1f} ms; the tf_keras plain step is "
        f"{medians['tf_keras plain'] / plain:.1f}x the Keras 3 one)."
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 90%% only, 1+3 epochs on 128 examples (CNN unless --architectures)")
    parser.add_argument(
        "--architectures", nargs="+", choices=list(ARCHITECTURES), default=None,
        help="default: all (with --quick: cnn)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3, help="seeds per target (default 3)")
    parser.add_argument("--runs", type=int, default=9, help="timed runs per model for the step time (default 9)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed run (default 10)")
    add_tfmot_arguments(parser)
    args = parser.parse_args(argv)
    if args.tfmot_worker:
        return serve_tfmot_jobs(args.tfmot_worker, WORKERS)

    import keras

    import tfprune

    seeds = range(1 if args.quick else args.seeds)
    targets = TARGETS[:1] if args.quick else TARGETS
    runs, steps = (1, 1) if args.quick else (args.runs, args.steps)
    architectures = args.architectures or (["cnn"] if args.quick else list(ARCHITECTURES))
    interpreter = tfmot_python(args.tfmot_python)
    accuracy_table, all_results, all_macs, step_rows, descriptions, jobs, ours = [], {}, {}, [], [], [], {}
    with tempfile.TemporaryDirectory() as directory:
        for architecture in architectures:
            title, _, size, channels, _, batch_size, epochs = ARCHITECTURES[architecture]
            dense_epochs, pruning_epochs = (1, 3) if args.quick else epochs
            (x_train, y_train), (x_test, y_test) = tfprune.datasets.digits(image_size=size, channels=channels, as_numpy=True)
            limit = 128 if args.quick else None
            data = dict(x_train=x_train[:limit], y_train=y_train[:limit], x_test=x_test[:limit], y_test=y_test[:limit])
            descriptions.append(
                f"{title}: batch {batch_size}, {dense_epochs} dense epoch(s), then {pruning_epochs} pruning epoch(s) "
                f"({len(data['x_train'])} train / {len(data['x_test'])} test images)."
            )
            ours[architecture] = {"tfprune STR": [], "dense": [], "macs": None, "depthwise too": []}
            depthwise = has_depthwise(ARCHITECTURES[architecture][1](keras))
            weights = {}
            for seed in seeds:
                dense_weights, dense_accuracy, ours[architecture]["macs"] = train_dense(architecture, data, seed, dense_epochs)
                ours[architecture]["dense"].append(100 * dense_accuracy)
                weights.update({f"seed_{seed}_weight_{index}": weight for index, weight in enumerate(dense_weights)})
                for target in targets:
                    run = run_str(architecture, data, dense_weights, seed, target, pruning_epochs)
                    print(title, "STR", run["seed"], run["target"], run["accuracy"],
                          "per-layer sparsity", np.round(run["layers"], 3).tolist(), flush=True)  # fmt: skip
                    ours[architecture]["tfprune STR"].append(run)
                    if depthwise:
                        run = run_str(architecture, data, dense_weights, seed, target, pruning_epochs, depthwise=True)
                        print(title, "STR with depthwise", run["seed"], run["target"], run["accuracy"],
                              "depthwise sparsity", np.round(run["depthwise"], 3).tolist(), flush=True)  # fmt: skip
                        ours[architecture]["depthwise too"].append(run)
            data_path = os.path.join(directory, f"{architecture}.npz")
            np.savez(data_path, **data, **weights)
            jobs.append(dict(kind="accuracy", architecture=architecture, data=data_path, seeds=list(seeds),
                             targets=list(targets), pruning_epochs=pruning_epochs))  # fmt: skip
            ours[architecture]["times"] = str_step_times(architecture, runs, steps)
        jobs += [dict(kind="step_time", architecture=name, runs=runs, steps=steps) for name in architectures]
        theirs = run_tfmot(interpreter, jobs)
    step_behind = []
    for index, architecture in enumerate(architectures):
        title = ARCHITECTURES[architecture][0]
        check_same_dense_model(title, ours[architecture]["dense"], theirs[index])
        results = {"tfprune STR": ours[architecture]["tfprune STR"], "TFMOT": theirs[index]}
        accuracy_table += accuracy_rows(title, ours[architecture]["dense"], ours[architecture]["macs"], results, targets)
        all_results[title] = results
        all_macs[title] = ours[architecture]["macs"]
        medians = {}
        for times in (ours[architecture]["times"], theirs[len(architectures) + index]["times"]):
            plain = statistics.median(next(iter(times.values())))
            for name, values in times.items():
                medians[name] = statistics.median(values)
                step_rows.append(f"| {title} | {name} | {1000 * medians[name]:.1f} | {medians[name] / plain:.2f} |")
        step_behind += step_time_behind(title, medians)
    versions = theirs[-1]["versions"]
    try:
        interpreter = os.path.relpath(interpreter, ROOT)
    except ValueError:  # another drive on Windows
        pass
    command = command_line("benchmarks.str_vs_tfmot", argv)
    setting = (
        f"Command: `{command}` ({machine()}; TFMOT side run by `{interpreter}` with "
        f"`TF_USE_LEGACY_KERAS=1`: {versions})."
    )
    accuracy_text = [
        ACCURACY_SECTION, "", setting, "",
        "Digits (scikit-learn, offline). Both methods start from the same dense Keras 3 weights and train "
        f"the same epochs with Adam {LEARNING_RATE}; sparsity rises over the first {RAMP_SHARE:.0%} of the pruning "
        f"epochs along the same cubic ramp (TFMOT `PolynomialDecay`, masks updated every {FREQUENCY} steps; "
        f"STR `SparsityBudget`, thresholds rescaled every {FREQUENCY} steps). Every Conv2D and Dense kernel is "
        "pruned, on both sides; DepthwiseConv2D kernels stay dense on both, because TFMOT 0.8 prunes none of their "
        "weights (its registry lists `DepthwiseConv2D: []`; tfprune's `STRDepthwiseConv2D` can). Sparsity and MACs "
        "count the pruned layers. 'Emptied layers': layers left with no non-zero weight (mean over seeds). Accuracy: test split after stripping, mean ± std over "
        f"{len(seeds)} seed(s). 'Budget MACs': kernel MACs per image that touch a non-zero weight with the "
        "method's per-layer sparsities; 'uniform MACs': every layer at the target; the last column is their ratio "
        "(below 1: the method's budget is cheaper than uniform).",
        *[f"- {description}" for description in descriptions], "",
        "| Model | Target | Method | Test accuracy (%) | Achieved sparsity | Emptied layers | Budget MACs | Uniform MACs "
        "| Budget / uniform |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *accuracy_table, "",
        "Where tfprune is behind TFMOT (mean accuracy, or MACs of the budget):", "",
        *behind(all_results, targets, all_macs), "",
        *depthwise_table({ARCHITECTURES[a][0]: ours[a]["depthwise too"] for a in architectures}, targets),
    ]  # fmt: skip
    step_text = [
        STEP_TIME_SECTION, "", setting, "",
        f"`train_on_batch` on one fixed random batch (the table 1 batch sizes), median over {runs} interleaved runs "
        f"of {steps} steps; each ratio is to the plain model measured in the same process (Keras 3 for tfprune, "
        "tf_keras for TFMOT, whose row includes the `UpdatePruningStep` update that fit does before every batch). "
        f"The STR + SparsityBudget row adds the callback's rescaling every {FREQUENCY} batches, as in table 1.",
        "",
        "| Model | Variant | Median step (ms) | Ratio to plain |",
        "| --- | --- | ---: | ---: |",
        *step_rows, "",
        "Where tfprune is behind TFMOT (overhead over the plain model of the same process):", "",
        *(step_behind or ["- Nowhere in this run: STR's step-time ratio is at most TFMOT's."]), "",
    ]  # fmt: skip
    write_section(ACCURACY_SECTION, "\n".join(accuracy_text))
    write_section(STEP_TIME_SECTION, "\n".join(step_text))
    print("\n".join(accuracy_text + step_text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
