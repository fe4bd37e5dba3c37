"""The end-to-end demo behind `tfprune demo` (and `make demo`).

On scikit-learn's bundled digits (offline), at 32x32:

1. A MobileNetV3 trained with BN-γ sparsification (`BNSparsity` at its
   defaults on the expansion channels: most of them end exactly at zero, so
   the γ histogram has two modes, at 0 and near 1).
2. **pruned**: that model pruned at rate 0.5 with the `sparsity_gamma`
   criterion on the expansion convolutions (docs/METHODS.md §11), then
   fine-tuned.
3. **dense**: the reference. The same sparsity-trained model, fine-tuned for
   the same epochs as the pruned one without being pruned, so both rows have
   had the same training and differ only by the pruning.
4. **str**: the sparsity-trained model converted to STR layers, trained to
   90% global sparsity with `SparsityBudget`, stripped.

All three are exported to TFLite, run in the LiteRT interpreter and
summarised in one table, written with plots into the output directory.
Accuracy is measured on the same test split for every row; latencies are
medians of invocations interleaved between the three files (dense, pruned,
str, dense, ...), so a slow moment of a shared machine hits all three alike.
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np

__all__ = ["DemoResult", "run"]

_SETTINGS = {
    # variant, dense epochs, fine-tune epochs, STR epochs, latency runs
    "full": {"variant": "large", "dense_epochs": 10, "finetune_epochs": 5, "str_epochs": 10, "runs": 50},
    "quick": {"variant": "small", "dense_epochs": 2, "finetune_epochs": 1, "str_epochs": 3, "runs": 10},
}
_COLUMNS = (
    ("model", "{}"),
    ("accuracy", "{:.4f}"),
    ("tflite_accuracy", "{:.4f}"),
    ("params", "{:,}"),
    ("macs", "{:,}"),
    ("kernel_sparsity", "{:.1%}"),
    ("tflite_bytes", "{:,}"),
    ("tflite_gzip_bytes", "{:,}"),
    ("latency_ms", "{:.3f}"),
)


@dataclasses.dataclass
class DemoResult:
    """What `tfprune demo` measured.

    Attributes:
        rows: List of dicts, one per model (`dense`, `pruned`, `str`), with
            test accuracy in Keras and in the LiteRT interpreter, params, MACs
            (multiply-accumulates; FLOPs = 2 x MACs), share of exactly-zero
            kernel weights, TFLite file size and gzip size, and median LiteRT
            latency (1 thread, invocations interleaved between the three
            files) in milliseconds.
        settings: Dict. Epochs, variant, seed, rate and target used, and the
            `gamma_statistics` of the sparsity training (share of expansion-channel
            |γ| below 1e-3, 1e-2, 1e-1).
        files: Dict mapping a description to a path written in the output dir.
        seconds: Float. Wall time of the whole run.

    Example:

    >>> from tfprune.demo import DemoResult
    >>> result = DemoResult(rows=[{"model": "dense"}], settings={"epochs": 1}, files={}, seconds=1.5)
    >>> result.to_dict()["seconds"]
    1.5
    """

    rows: list
    settings: dict
    files: dict
    seconds: float

    def to_dict(self):
        """Returns the result as JSON-serialisable data."""
        return dataclasses.asdict(self)

    def __str__(self):
        headers = [name for name, _ in _COLUMNS]
        cells = [[form.format(row[name]) for name, form in _COLUMNS] for row in self.rows]
        widths = [max(len(text) for text in column) for column in zip(headers, *cells)]
        lines = ["  ".join(text.rjust(width) for text, width in zip(headers, widths))]
        lines += ["  ".join(text.rjust(width) for text, width in zip(row, widths)) for row in cells]
        lines.append("MACs = multiply-accumulates per image (FLOPs = 2 x MACs); latency: LiteRT, 1 thread, median of interleaved invocations.")
        lines += [f"{name}: {path}" for name, path in self.files.items()]
        lines.append(f"total time: {self.seconds:.0f} s")
        return "\n".join(lines)


def run(out_dir="tfprune_demo", quick=False, seed=0, verbose=True):
    """Runs the demo pipeline and writes its table and plots into `out_dir`.

    Args:
        out_dir: String. Output directory (created if missing). Files written:
            `demo.json`, `dense.tflite`, `pruned.tflite`, `str.tflite`,
            `gamma_histogram.png`, `block_widths.png`, `str_sparsity.png`.
        quick: Bool. A short run (MobileNetV3-Small, few epochs) of about five
            minutes instead of about twenty (2 cores).
        seed: Int. Seeds data split, initialisation and training.
        verbose: Bool. Print progress (one line per epoch and per step).

    Returns:
        A `DemoResult`.

    Raises:
        ValueError: If `out_dir` exists and is not a directory.

    Example:

    >>> from tfprune import demo
    >>> result = demo.run("demo_out", quick=True)  # doctest: +SKIP
    >>> print(result)  # doctest: +SKIP
    """
    import tfprune
    from tfprune import export, plots

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"`out_dir` '{out_dir}' exists and is not a directory; pass a directory path.")
    os.makedirs(out_dir, exist_ok=True)
    settings = dict(_SETTINGS["quick" if quick else "full"], seed=seed, rate=0.5, str_target=0.9,
                    bn_l1=tfprune.callbacks.BNSparsity().l1, image_size=32)
    started = time.time()
    say = print if verbose else (lambda *args, **kwargs: None)
    fit_verbose = 2 if verbose else 0

    (train_x, train_y), (test_x, test_y) = tfprune.datasets.digits(
        image_size=settings["image_size"], channels=3, seed=seed, as_numpy=True
    )

    def compile_model(model, learning_rate):
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    def fit(model, epochs, callbacks=()):
        model.fit(train_x, train_y, batch_size=32, epochs=epochs, callbacks=list(callbacks),
                  validation_data=(test_x, test_y), verbose=fit_verbose)
        return model

    say(f"[1/4] training a dense MobileNetV3-{settings['variant'].title()} with BN-gamma sparsity "
        f"({settings['dense_epochs']} epochs)")
    dense = tfprune.models.mobilenet_v3(settings["variant"], input_shape=(32, 32, 3), classes=10, seed=seed)
    compile_model(dense, 2e-3)
    # The defaults: proximal channel penalty in Adam's metric, on the channels pruned below.
    sparsity = tfprune.callbacks.BNSparsity(settings["bn_l1"], targets="expansion")
    fit(dense, settings["dense_epochs"], [sparsity])
    settings["gamma_statistics"] = sparsity.gamma_statistics()
    say(f"  share of expansion-channel |gamma| < 0.01: {settings['gamma_statistics']['bn_gamma_below_0.01']:.1%}")

    say(f"[2/4] pruning expansion channels at rate {settings['rate']} (sparsity_gamma), fine-tuning "
        f"({settings['finetune_epochs']} epochs); the dense reference gets the same fine-tuning")
    pruned, prune_result = tfprune.prune(dense, criterion="sparsity_gamma", rate=settings["rate"],
                                         targets="expansion")
    compile_model(pruned, 1e-3)
    fit(pruned, settings["finetune_epochs"])
    reference = keras.models.clone_model(dense)
    reference.set_weights(dense.get_weights())
    compile_model(reference, 1e-3)
    fit(reference, settings["finetune_epochs"])

    say(f"[3/4] training an STR variant to {settings['str_target']:.0%} sparsity "
        f"({settings['str_epochs']} epochs)")
    str_model = tfprune.sparsify(dense)
    compile_model(str_model, 1e-3)
    budget = tfprune.callbacks.SparsityBudget(settings["str_target"])
    fit(str_model, settings["str_epochs"], [budget])
    str_report = tfprune.sparsity_report(str_model)
    # SparsityBudget's layer floor keeps every layer alive; say so if one were emptied anyway.
    settings["str_emptied_layers"] = str_report.emptied_layers
    if str_report.emptied_layers:
        say(f"  warning: STR emptied {', '.join(str_report.emptied_layers)}")
    str_plain = tfprune.strip(str_model)

    say("[4/4] exporting to TFLite, measuring accuracy and latency in the LiteRT interpreter")
    rows, files = [], {}
    models = (("dense", reference, False), ("pruned", pruned, False), ("str", str_plain, True))
    paths = {name: os.path.join(out_dir, f"{name}.tflite") for name, _, _ in models}
    reports = {
        name: export.to_tflite(model, paths[name], sparse=sparse, sample_inputs=test_x[:32], verbose=int(verbose))
        for name, model, sparse in models
    }
    latencies = export.compare_latency(paths, threads=1, runs=settings["runs"])
    for name, model, _ in models:
        path, report = paths[name], reports[name]
        analysis = tfprune.analyze(model)
        tflite_scores = export.predict(path, test_x)[0]
        rows.append({
            "model": name,
            "accuracy": _accuracy(_predict(model, test_x), test_y),
            "tflite_accuracy": _accuracy(tflite_scores, test_y),
            "params": int(analysis.params),
            "macs": int(analysis.macs),
            "kernel_sparsity": float(analysis.kernel_sparsity),
            "tflite_bytes": int(report.size_bytes),
            "tflite_gzip_bytes": int(report.gzip_size_bytes),
            "latency_ms": latencies[name],
        })
        files[f"{name} model"] = path
        say(f"  {name}: accuracy {rows[-1]['accuracy']:.4f}, {rows[-1]['tflite_bytes']:,} bytes")

    files["gamma histogram"] = os.path.join(out_dir, "gamma_histogram.png")
    plots.gamma_distribution({f"BNSparsity({settings['bn_l1']:g}), all BN": dense}, path=files["gamma histogram"])
    files["block widths"] = os.path.join(out_dir, "block_widths.png")
    plots.widths(prune_result, path=files["block widths"])
    files["STR sparsity"] = os.path.join(out_dir, "str_sparsity.png")
    plots.layer_sparsity(str_report, path=files["STR sparsity"])
    result = DemoResult(rows=rows, settings=settings, files=files, seconds=time.time() - started)
    json_path = os.path.join(out_dir, "demo.json")
    result.files["table (JSON)"] = json_path
    result.seconds = time.time() - started
    _write_json(result.to_dict(), json_path)
    return result


def _predict(model, inputs, batch_size=256):
    # Eager calls: `model.predict` traces a function per model and batch shape, and
    # the three models' traces add up to TensorFlow's retracing warning.
    return np.concatenate([
        keras.ops.convert_to_numpy(model(inputs[start : start + batch_size], training=False))
        for start in range(0, len(inputs), batch_size)
    ])


def _accuracy(scores, labels):
    return float(np.mean(np.argmax(scores, axis=-1) == labels))


def _write_json(data, path):
    from tfprune._utils import atomic_path

    with atomic_path(path) as temporary, open(temporary, "w") as handle:
        json.dump(data, handle, indent=2)
