"""Width search on digits: ABCPruner and DMCP at a 50% MACs budget beside rate criteria.

MobileNetV3-Small 32x32 (`tfprune.models.mobilenet_v3("small", seed=0)`) is
trained on the digits train split (the last 20% of it held out as the search's
validation data). Every method then prunes every prunable group to about
half the MACs:

- `l1`, group scope (Li et al.) and `bn_gamma`, global scope (Network
  Slimming): `tfprune.prune` at the rate (found by bisection) whose MACs are
  closest to 50% without exceeding it;
- ABCPruner: `tfprune.search.ABCPruner(budget=0.5)`;
- DMCP: `tfprune.search.DMCP(target=0.5)` trained for a few epochs from the
  trained model, then `prune()`.

Every pruned model gets the same fine-tune (same epochs, optimizer, batch
size, order) and is scored on the test split. The script writes its section of
benchmarks/RESULTS.md.

    .venv/bin/python -m benchmarks.search_digits            # full run
    .venv/bin/python -m benchmarks.search_digits --quick    # smoke run, no RESULTS.md
"""

import argparse
import platform
import sys
import time

import keras

import tfprune
from benchmarks.common import write_section

SECTION = "## Width search (ABCPruner, DMCP)"
BATCH_SIZE = 64


def compile_model(model):
    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def test_accuracy(model, test):
    compile_model(model)
    return float(model.evaluate(*test, batch_size=BATCH_SIZE, verbose=0, return_dict=True)["accuracy"])


def finetune(model, train, epochs, seed):
    keras.utils.set_random_seed(seed)
    compile_model(model)
    model.fit(*train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    return model


def rate_for_half_macs(model, criterion, scope, share, steps):
    """Bisection on `rate`: the largest MACs share at or below `share`."""
    low, high, best = 0.0, 0.95, None
    for _ in range(steps):
        rate = (low + high) / 2
        pruned, result = tfprune.prune(model, criterion, rate=rate, scope=scope, round_to=1)
        if result.macs_after / result.macs_before <= share:
            high, best = rate, (pruned, result)
        else:
            low = rate
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings; do not write RESULTS.md")
    args = parser.parse_args(argv)
    quick = args.quick
    settings = {
        "train_epochs": 1 if quick else 8,
        "finetune_epochs": 1 if quick else 5,
        "colony_size": 3 if quick else 8,
        "cycles": 1 if quick else 5,
        "finetune_steps": 5 if quick else 20,
        "dmcp_epochs": 1 if quick else 4,
        "bisection_steps": 3 if quick else 8,
    }
    seed, share = 0, 0.5
    (x, y), test, *_ = tfprune.datasets.digits(image_size=32, as_numpy=True)
    if quick:  # a smoke run: a few hundred images keep it under a couple of minutes
        x, y, test = x[:320], y[:320], (test[0][:128], test[1][:128])
    split = int(0.8 * len(x))
    train, validation = (x[:split], y[:split]), (x[split:], y[split:])

    keras.utils.set_random_seed(seed)
    model = compile_model(tfprune.models.mobilenet_v3("small", input_shape=(32, 32, 3), classes=10, seed=seed))
    model.fit(*train, batch_size=BATCH_SIZE, epochs=settings["train_epochs"], verbose=0)
    base = tfprune.analyze(model)
    rows = [("unpruned", 1.0, 1.0, test_accuracy(model, test), None, "-", "-")]

    candidates = {}
    for criterion, scope in (("l1", "group"), ("bn_gamma", "global")):
        start = time.perf_counter()
        pruned, result = rate_for_half_macs(model, criterion, scope, share, settings["bisection_steps"])
        candidates[f"{criterion} ({scope} scope, rate {result.rate:.3f})"] = (
            pruned, time.perf_counter() - start, "none (one-shot scores)"
        )

    start = time.perf_counter()
    pruner = tfprune.search.ABCPruner(
        model, train, budget=share, colony_size=settings["colony_size"], cycles=settings["cycles"],
        finetune_steps=settings["finetune_steps"], batch_size=BATCH_SIZE, validation_data=validation,
        seed=seed, verbose=0,
    )
    abc = pruner.search()
    abc_evaluations = pruner.colony.evaluations
    candidates["ABCPruner"] = (
        abc.model, time.perf_counter() - start,
        f"{abc_evaluations} candidates x {settings['finetune_steps']} steps",
    )

    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    dmcp = tfprune.search.DMCP(model, target=share)
    dmcp.fit(*train, batch_size=BATCH_SIZE, epochs=settings["dmcp_epochs"], verbose=0)
    dmcp_result = dmcp.prune()
    candidates["DMCP"] = (
        dmcp_result.model, time.perf_counter() - start, f"{settings['dmcp_epochs']} epochs with gates"
    )

    for name, (pruned, seconds, search_cost) in candidates.items():
        analysis = tfprune.analyze(pruned)
        before = test_accuracy(pruned, test)
        after = test_accuracy(finetune(pruned, train, settings["finetune_epochs"], seed), test)
        rows.append((name, analysis.macs / base.macs, analysis.params / base.params, after, before, f"{seconds:.0f}", search_cost))

    command = ".venv/bin/python -m benchmarks.search_digits" + (" --quick" if quick else "")
    lines = [
        SECTION,
        "",
        f"Command: `{command}` ({platform.machine()}, 2 cores shared with other jobs; Keras {keras.__version__}).",
        f"MobileNetV3-Small 32x32 (`tfprune.models.mobilenet_v3('small', seed={seed})`), Adam 1e-3, batch "
        f"{BATCH_SIZE}, trained {settings['train_epochs']} epochs on {split} digits train images; the other "
        f"{len(x) - split} train images are the search's validation data; accuracy on the {len(test[0])} test images. "
        f"Every prunable group is searched/pruned (targets='all'), budget {share:.0%} of the MACs "
        f"({base.macs:,}). Same fine-tune for every pruned model: {settings['finetune_epochs']} epochs, "
        f"Adam 1e-3, seed {seed}. ABCPruner: colony {settings['colony_size']}, {settings['cycles']} cycles, "
        f"{settings['finetune_steps']} fine-tune steps per candidate, candidates 10%..100%. DMCP: "
        f"{settings['dmcp_epochs']} epochs from the trained model, strength 10, logit_scale 100. Rate criteria: "
        f"`tfprune.prune` at the rate (bisection, {settings['bisection_steps']} steps) with the largest MACs share "
        f"<= {share}.",
        "",
        "| Method | MACs share | Params share | test acc. after fine-tune | test acc. before fine-tune | search s | search cost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, macs, params, after, before, seconds, cost in rows:
        before_text = "-" if before is None else f"{before:.3f}"
        lines.append(f"| {name} | {macs:.3f} | {params:.3f} | {after:.3f} | {before_text} | {seconds} | {cost} |")
    lines += [
        "",
        f"ABCPruner best fitness per cycle (validation accuracy after {settings['finetune_steps']} steps): "
        + ", ".join(f"{value:.3f}" for value in abc.history["best_fitness"]) + ".",
        "DMCP expected MACs share per epoch: "
        + ", ".join(f"{value:.3f}" for value in dmcp_result.history["expected_macs_share"])
        + f"; widths read from the distribution give {dmcp_result.macs_share:.3f}.",
        f"One seed; the test split has {len(test[0])} images, so one image is {100 / len(test[0]):.2f} points. "
        "'search s' is wall time on the shared machine (ABCPruner includes one traced training step "
        "reused by all candidates; DMCP includes its training epochs).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not quick:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
