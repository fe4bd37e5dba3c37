"""The `tfprune` command line.

Every subcommand has `--help`. Commands that print figures accept `--json`.
Bad input (a missing or corrupt file, a bad rate, an unknown criterion, an
existing output without `--force`, an output that is a directory, a name too
long or a place that cannot be written, any other `OSError`) prints one sentence
on stderr and exits with code 2, without a traceback (`--traceback` shows it,
for bug reports). The output location is checked before any work is done.
Outputs are written atomically: a failed run never leaves a half-written file
and never replaces an existing one unless `--force` is given. Input files are
only read. Python warnings are printed as one `tfprune: warning: ...` line
each; the LiteRT interpreter's own `INFO:` lines are kept off the terminal.
`tfprune export` makes its own verification inputs, one per model input;
`--input-shape` gives the sizes a model leaves unknown (for `tfprune bench`
too), and `--sample-inputs` real inputs from a `.npy` or `.npz` file.

Example:

```
tfprune demo --quick --out demo_out
tfprune report model.keras
tfprune prune model.keras --criterion sparsity_gamma --rate 0.5 -o small.keras
tfprune export small.keras -o small.tflite --quantize dynamic
tfprune export text.keras -o text.tflite --input-shape token_ids=128 padding_mask=128
tfprune bench small.tflite --threads 1 2
```
"""

import argparse
import json
import os
import sys
import textwrap
import warnings
import zipfile

from tfprune._cli_files import (
    UsageError,
    _check_input,
    _check_output,
    _positive_int,
    _rate,
    _without_litert_info,
    _writing,
)
from tfprune._cli_inputs import (
    _calibration_data,
    _check_sample_inputs_file,
    _file_inputs,
    _input_shapes,
    _require_known_sizes,
    _sample_inputs,
    _shape_specification,
)
from tfprune._optional import MissingDependencyError, require

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage block before its error; one line is
    # easier to read and to test, and `--help` still shows the usage.
    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


# 128 + SIGINT: the code a shell reports for a process ended by Ctrl-C.
INTERRUPTED = 130


def main(argv=None):
    """Runs the `tfprune` command.

    Args:
        argv: Optional list of strings. The arguments after the program name;
            defaults to `sys.argv[1:]`.

    Returns:
        Int. The exit code: 0 on success, 2 on bad input, 1 when `tfprune
        prune` removed no channel (it then writes no file), 130 when
        interrupted (Ctrl-C: one line on stderr, no traceback).

    Example:

    >>> from tfprune.cli import main
    >>> main(["report", "missing.keras"])  # doctest: +SKIP
    2
    """
    parser = build_parser()
    show_traceback = "--traceback" in (sys.argv[1:] if argv is None else argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help()
                return 2
            return args.handler(args) or 0
    except KeyboardInterrupt:
        if show_traceback:
            raise
        print("tfprune: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (UsageError, ValueError, TypeError, OSError, MissingDependencyError) as error:
        if show_traceback:
            raise
        message = _os_error_message(error) if isinstance(error, OSError) else str(error)
        print(f"tfprune: error: {' '.join(message.split())}", file=sys.stderr)
        return 2


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # One line per warning, without the source path and line Python adds.
    text = " ".join(str(message).split())
    print(f"tfprune: warning: {text}", file=sys.stderr if file is None else file)


def _os_error_message(error):
    """One sentence for an `OSError` that escaped a command (file names kept, no errno)."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.filename is None:
        return f"{reason}."
    if error.filename2 is not None:
        return f"Cannot move '{error.filename}' to '{error.filename2}': {reason}."
    return f"Cannot use '{error.filename}': {reason}."


def build_parser():
    """Returns the `argparse` parser of the `tfprune` command."""
    parser = _Parser(
        prog="tfprune",
        description="Pruning for Keras 3: learnable sparsity, channel removal, TFLite export.",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show Python tracebacks for errors"
    )
    parser.add_argument(
        "--unsafe-load",
        action="store_true",
        help=(
            "load .keras files that hold Python code (Lambda layers) with Keras's safe mode off "
            "for that file; it runs their code, so use it only for files you trust"
        ),
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = subcommands.add_parser(
        "demo",
        help="run the whole pipeline on the offline digits data",
        description=(
            "Train a MobileNetV3 on the digits data with BN-gamma sparsification, prune it "
            "at rate 0.5 (sparsity_gamma) and fine-tune; train an STR variant to 90% "
            "sparsity; export all three to TFLite; print one table and write it as JSON "
            "plus PNG plots into --out."
        ),
    )
    demo.add_argument("--out", default="tfprune_demo", help="output directory (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="a short run (about 2 minutes)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    _add_json_flag(demo)
    demo.set_defaults(handler=_run_demo)

    report = subcommands.add_parser(
        "report",
        help="params, MACs and sparsity of a .keras model",
        description="Print params, MACs (FLOPs = 2 x MACs) and kernel sparsity per layer.",
    )
    report.add_argument("model", help="input .keras file")
    _add_json_flag(report)
    report.set_defaults(handler=_run_report)

    prune = subcommands.add_parser(
        "prune",
        help="remove channels from a .keras model",
        description="Score channels with a criterion and physically remove the lowest ones. "
        "Exits with 1 and writes nothing when no channel would be removed.",
    )
    prune.add_argument("model", help="input .keras file")
    prune.add_argument("--criterion", required=True, help="importance criterion, e.g. sparsity_gamma, l1")
    prune.add_argument(
        "--rate", type=_rate, default=None,
        help="share of channels to remove, in (0, 1); required except with --criterion str_zero_filters, "
        "which removes exactly the filters STR trained to zero",
    )
    prune.add_argument(
        "--scope",
        default=None,
        choices=("global", "group"),
        help="one threshold over all groups, or the same rate in every group (default: global for "
        "bn_gamma, sparsity_gamma and str_zero_filters, group for the others)",
    )
    prune.add_argument(
        "--targets", default="all", choices=("all", "expansion", "heads", "mlp", "hidden"),
        help="groups to prune: all (default), the expansion layers of inverted residual blocks, or a "
        "transformer's attention heads, MLP units or hidden width",
    )
    prune.add_argument("--min-channels", type=_positive_int, default=1, help="channels every group keeps")
    prune.add_argument(
        "--round-to", type=_positive_int, default=8,
        help="round kept widths up to a multiple (default: %(default)s, measured fastest on LiteRT)",
    )
    prune.add_argument(
        "--unknown",
        default="raise",
        choices=("raise", "freeze"),
        help="a layer tfprune has no channel handler for: refuse the model, or leave its channels "
        "unpruned (default: %(default)s)",
    )
    _add_output_flags(prune, ".keras")
    _add_json_flag(prune)
    prune.set_defaults(handler=_run_prune)

    sparsify = subcommands.add_parser(
        "sparsify",
        help="replace conv/dense layers by STR layers",
        description="Replace Conv1D/Conv2D/DepthwiseConv2D/Dense layers by STR layers (weights kept).",
    )
    sparsify.add_argument("model", help="input .keras file")
    sparsify.add_argument("--skip", nargs="*", default=(), help="layer names to leave dense")
    sparsify.add_argument("--s-init", type=float, default=None, help="initial threshold parameter s")
    _add_output_flags(sparsify, ".keras")
    sparsify.set_defaults(handler=_run_sparsify)

    strip = subcommands.add_parser(
        "strip",
        help="bake sparse kernels into plain Keras layers",
        description="Replace STR layers and pruning masks by plain Keras layers (identical outputs).",
    )
    strip.add_argument("model", help="input .keras file")
    _add_output_flags(strip, ".keras")
    strip.set_defaults(handler=_run_strip)

    export = subcommands.add_parser(
        "export",
        help="convert a .keras model to .tflite",
        description=textwrap.fill(
            "Convert to TFLite/LiteRT, verify against Keras in the interpreter, report sizes. A model "
            "with several inputs (token_ids, padding_mask, ...) gets one file input per model input, "
            "with the same name. Sizes the model leaves unknown (a sequence length, an image's height "
            "and width) stay dynamic in the file, but the verification inputs need them: give "
            "--input-shape, or real inputs with --sample-inputs. Random verification inputs are "
            "uniform [0, 1) floats, 0..255 for uint8 inputs, ones for inputs named *mask*, and zeros "
            "for other integer inputs (token ids: the only id below every vocabulary size).",
            79,
        ),
        epilog=(
            "examples:\n"
            "  tfprune export model.keras -o model.tflite --quantize dynamic\n"
            "  tfprune export any_size_cnn.keras -o cnn.tflite --input-shape 224,224,3\n"
            "  tfprune export text.keras -o text.tflite --input-shape token_ids=128 padding_mask=128\n"
            "  tfprune export text.keras -o text.tflite --sample-inputs texts.npz --quantize int8\n"
            "    (texts.npz from np.savez('texts.npz', token_ids=..., padding_mask=...))"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("model", help="input .keras file")
    export.add_argument("--quantize", choices=("dynamic", "float16", "int8"), default=None)
    export.add_argument("--sparse", action="store_true", help="use the converter's sparsity encoding")
    _add_input_shape_flag(export, "the random verification and calibration inputs", "model")
    export.add_argument(
        "--sample-inputs",
        metavar="FILE",
        help="verification inputs, samples first: a .npy file (one-input models) or an .npz file "
        "with one array per input name; with --quantize int8 also the calibration data unless "
        "--calibration is given",
    )
    export.add_argument(
        "--calibration",
        choices=("digits", "random"),
        default=None,
        help="representative data for --quantize int8 (default: the --sample-inputs if given, "
        "else 100 random inputs made as for verification)",
    )
    _add_output_flags(export, ".tflite")
    _add_json_flag(export)
    export.set_defaults(handler=_run_export)

    bench = subcommands.add_parser(
        "bench",
        help="LiteRT latency of a .tflite file",
        description="Measure LiteRT interpreter latency (XNNPACK): warm-up, then median/min/max.",
    )
    bench.add_argument("model", help="input .tflite file")
    bench.add_argument("--threads", type=_positive_int, nargs="+", default=[1, 2])
    bench.add_argument("--runs", type=_positive_int, default=50)
    _add_input_shape_flag(bench, "the inputs timed (the batch is 1)", "file")
    _add_json_flag(bench)
    bench.set_defaults(handler=_run_bench)
    return parser


def _add_input_shape_flag(parser, inputs, owner):
    """`--input-shape [NAME=]SIZES ...`, as `export` and `bench` take it."""
    parser.add_argument(
        "--input-shape",
        nargs="+",
        action="extend",
        type=_shape_specification,
        default=None,
        metavar="[NAME=]SIZES",
        help=f"sizes of {inputs}, without the batch axis: 224,224,3 for every input, or NAME=SIZES "
        f"per input (token_ids=12 padding_mask=12); needed when the {owner} leaves a size other "
        "than the batch unknown (a sequence length, an image's height and width)",
    )


def _add_json_flag(parser):
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_output_flags(parser, suffix):
    parser.add_argument("-o", "--output", required=True, help=f"output {suffix} file")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")


def _load_model(path, unsafe=False):
    _check_input(path, ".keras")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"Input file '{path}' is not a valid .keras archive (corrupt or another format).")
    import keras

    import tfprune  # noqa: F401  (registers tfprune's layers for deserialization)

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as error:  # keras raises many types for unreadable archives
        if "safe_mode" in str(error):
            raise UsageError(
                f"'{path}' holds Python code (a Lambda layer), which Keras's safe mode refuses to "
                "load; if you trust the file, run again with --unsafe-load."
            ) from error
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"Could not load '{path}' as a Keras model: {first_line}") from error


def _save_model(model, path, force):
    from tfprune._utils import atomic_path

    with _writing(path), atomic_path(path, overwrite=force) as temporary:
        model.save(temporary)


def _emit(result, as_json):
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=_json_default))
    else:
        print(result)


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def _run_demo(args):
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out '{args.out}' is a file; pass a directory for the demo's outputs.")
    require("The demo", "tensorflow", "ai_edge_litert")  # it exports: asked before it trains
    from tfprune import demo

    with _writing(args.out), _without_litert_info():
        result = demo.run(out_dir=args.out, quick=args.quick, seed=args.seed, verbose=not args.json)
    _emit(result, args.json)


def _run_report(args):
    import tfprune

    model = _load_model(args.model, args.unsafe_load)
    _emit(tfprune.analyze(model), args.json)


# Criteria that need `data=` (inputs, or labels too), which `tfprune prune` cannot pass.
_DATA_DRIVEN = ("activation", "hrank", "reconstruction", "taylor")


def _run_prune(args):
    import tfprune

    _check_output(args.output, ".keras", args.force)
    if args.criterion not in tfprune.criteria.available():  # fails before the model is loaded
        # (`criteria.get` would advise registering one in Python, which a command line cannot do)
        raise UsageError(
            f"Unknown criterion {args.criterion!r}; use one of {', '.join(tfprune.criteria.available())}."
        )
    if args.criterion in _DATA_DRIVEN:
        raise UsageError(
            f"Criterion {args.criterion!r} scores channels on data, which the command line does not take; "
            "use a weight criterion (l1, l2, bn_gamma, sparsity_gamma, ...) or tfprune.prune(..., data=...) in Python."
        )
    if args.rate is None and args.criterion != "str_zero_filters":
        raise UsageError(f"--rate is required with --criterion {args.criterion}, e.g. --rate 0.5.")
    model = _load_model(args.model, args.unsafe_load)
    try:
        pruned, result = tfprune.prune(
            model,
            criterion=args.criterion,
            rate=args.rate,
            scope=args.scope,
            targets=args.targets,
            min_channels=args.min_channels,
            round_to=args.round_to,
            unknown=args.unknown,
            verbose=0 if args.json else "auto",
        )
    except tfprune.graph.UnknownOperationError as error:
        operation = error.operation
        raise UsageError(
            f"tfprune has no channel handler for operation '{operation.name}' of type "
            f"{type(operation).__name__}; pass --unknown freeze to leave the channels around it unpruned."
        ) from None
    if result.unchanged:
        # An unchanged copy is no result: nothing is written, and the exit code says so.
        _emit(result, args.json)
        print(
            f"tfprune: removed no channel from {args.model} (see the warning above), so nothing was "
            f"written to {args.output}; raise --rate or lower --round-to.",
            file=sys.stderr,
        )
        return 1
    _save_model(pruned, args.output, args.force)
    _emit(result, args.json)


def _run_sparsify(args):
    import tfprune

    _check_output(args.output, ".keras", args.force)
    model = _load_model(args.model, args.unsafe_load)
    options = {} if args.s_init is None else {"s_init": args.s_init}
    sparse_model = tfprune.sparsify(model, skip=tuple(args.skip), **options)
    before = {layer.name: type(layer) for layer in model.layers}
    replaced = [layer.name for layer in sparse_model.layers if type(layer) is not before.get(layer.name)]
    _save_model(sparse_model, args.output, args.force)
    print(f"wrote {args.output} ({len(replaced)} layers replaced by STR layers)")


def _run_strip(args):
    import tfprune

    _check_output(args.output, ".keras", args.force)
    model = _load_model(args.model, args.unsafe_load)
    plain = tfprune.strip(model)
    kinds = sorted({type(layer).__name__ for layer in model.layers if hasattr(layer, "stripped_layer")})
    _save_model(plain, args.output, args.force)
    if kinds:
        print(f"wrote {args.output} ({', '.join(kinds)} layers replaced by plain Keras layers)")
    else:
        print(
            f"wrote {args.output}: '{args.model}' has no STR layer or pruning mask to strip, "
            "so the output is a plain copy"
        )


def _run_export(args):
    _check_output(args.output, ".tflite", args.force)
    if args.sample_inputs is not None:  # checked before the model is loaded
        _check_sample_inputs_file(args.sample_inputs)
    from tfprune import export
    from tfprune.export.inputs import model_inputs, random_batch

    model = _load_model(args.model, args.unsafe_load)
    inputs = model_inputs(model)
    shapes = _input_shapes(args.input_shape or (), inputs, f"model '{model.name}'")
    if args.sample_inputs is not None:
        sample_inputs = _sample_inputs(args.sample_inputs, inputs, model.name)
    else:
        _require_known_sizes(inputs, shapes, f"Model '{model.name}'")
        sample_inputs = random_batch(inputs, export.RANDOM_SAMPLES, shapes)
    representative_data = None
    if args.quantize == "int8":
        representative_data = _calibration_data(args, inputs, shapes, model.name)
    with _writing(args.output), _without_litert_info():
        report = export.to_tflite(
            model,
            args.output,
            quantize=args.quantize,
            representative_data=representative_data,
            sparse=args.sparse,
            overwrite=args.force,
            sample_inputs=sample_inputs,
            verbose=0 if args.json else "auto",
        )
    _emit(report, args.json)


def _run_bench(args):
    _check_input(args.model, ".tflite")
    from tfprune import export

    with _without_litert_info():
        inputs = _file_inputs(args.model)
        shapes = _input_shapes(args.input_shape or (), inputs, f"file '{args.model}'")
        _require_known_sizes(inputs, shapes, f"File '{args.model}'", "time them", bench=True)
        report = export.benchmark(
            args.model, threads=tuple(args.threads), runs=args.runs, input_shapes=shapes
        )
    _emit(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
