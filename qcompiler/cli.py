"""The ``qcompiler`` command line: show, passes, compile, run, report and demo.

Every error is one line on stderr and a non-zero exit code: 2 for a bad command line or a
``QCompilerError`` (a bad file, a wrong input, an unsupported model), 3 for an internal error.
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import NoReturn

import numpy as np

from . import api
from .backends import available_backends
from .config import QuantConfig
from .demo import run_demo
from .errors import InputFileError, QCompilerError, ReportError, SaveError
from .graph import Graph
from .input_check import read_feeds, write_arrays
from .pass_manager import PassManager, available_passes, get_pass
from .paths import atomic_file

EXAMPLES = Path(str(resources.files("qcompiler.examples")))


def _input_shape(item: str) -> tuple[str, list[int | str]]:
    """An ``--input-shape NAME=D0,D1,...`` option: each dimension a size >= 0 or a symbol."""
    name, sep, dims = item.partition("=")
    parsed: list[int | str] = []
    for dim in dims.split(",") if dims else []:
        dim = dim.strip()
        if dim.isdigit():
            parsed.append(int(dim))
        elif dim.isidentifier():
            parsed.append(dim)
        else:
            raise argparse.ArgumentTypeError(
                f"{item!r}: dimension {dim!r} is neither a size >= 0 nor a symbol name")
    if not name or not sep or not parsed:
        raise argparse.ArgumentTypeError(f"{item!r} is not NAME=D0,D1,... (e.g. image=1,3,224,224)")
    return name, parsed


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _shapes(items: list[tuple[str, list[int | str]]] | None) -> dict[str, list[int | str]] | None:
    return dict(items) if items else None


def _optimize(g: Graph, args: argparse.Namespace) -> Graph:
    """Run ``--passes`` (with ``--print-ir-after``, ``--explain``, ``--timing``) on ``g``."""
    if not args.passes or args.passes == "none":
        return g
    pm = PassManager(args.passes, print_ir_after=getattr(args, "print_ir_after", None),
                     stream=sys.stderr, explain=getattr(args, "explain", False))
    result = pm.run(g)
    for name, notes in pm.explanations.items():
        for note in notes:
            print(f"// {name}: {note}", file=sys.stderr)
    if getattr(args, "timing", False):
        print(pm.report(), file=sys.stderr)
    return result.graph


def cmd_show(args: argparse.Namespace) -> None:
    g = _optimize(api.load_onnx(args.model, _shapes(args.input_shape)), args)
    print(g.to_text(inline_constants=args.inline), end="")


def cmd_passes(args: argparse.Namespace) -> None:
    for name in available_passes():
        p = get_pass(name)
        doc = (type(p).__doc__ or "").strip().splitlines()[0]
        options = " ".join(f"{k}={_default(p, k)}" for k in type(p).option_types()
                           if isinstance(getattr(p, k), _SPELLED))
        print(f"{name:<16} {doc}")
        if options:
            print(f"{'':<16} options: {options}")


# Option values a pipeline string can spell; others (a QuantConfig...) are set from Python.
_SPELLED = (bool, int, float, str, tuple)


def _default(p: object, key: str) -> str:
    value = getattr(p, key)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def cmd_compile(args: argparse.Namespace) -> None:
    if not args.output and not args.emit_python:
        raise SaveError("say where to write: -o FILE.qcx (the saved executable), "
                        "--emit-python FOLDER (a standalone numpy program), or both")
    g = _optimize(api.load_onnx(args.model, _shapes(args.input_shape)), args)
    quantized = args.calib is not None or args.config is not None
    if quantized:
        config = QuantConfig.from_file(args.config) if args.config else QuantConfig()
        g = api.quantize(g, args.calib, config)
        _print_islands(g, config)
    options = {} if args.threads is None else {"threads": args.threads}
    exe = api.compile(g, backend=args.backend, **options)
    if args.output:
        exe.save(args.output)
        what = "quantized " if quantized else ""
        print(f"compiled {what}{args.model} with the {args.backend} backend into "
              f"{args.output}")
    if args.emit_python:
        exe.export_python(args.emit_python)
        print(f"wrote a standalone numpy program to {args.emit_python} "
              f"(python {Path(args.emit_python) / 'model.py'} inputs.npz outputs.npz)")


def _print_islands(g, config: QuantConfig) -> None:
    """Say what of the quantized graph stays float (lowered static graphs)."""
    if config.mode != "static" or not config.lower:
        return
    islands = g.float_islands()
    if not islands:
        print("quantized: integer ops from the input Quantize to the output Dequantize")
        return
    print(f"quantized: integer ops but for {len(islands)} float island(s):")
    for island in islands:
        print(f"  {island}")


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    try:
        write_arrays(path, arrays)
    except OSError as exc:
        raise SaveError(f"cannot write {path!r}: {exc.strerror or exc}") from None


def cmd_run(args: argparse.Namespace) -> None:
    exe = api.load(args.compiled)
    outputs = exe.run(read_feeds(args.inputs, InputFileError))
    if args.output:
        _write_npz(args.output, outputs)
        print(f"wrote {', '.join(outputs)} to {args.output}")
    else:
        for name, value in outputs.items():
            print(f"{name}: {value.dtype}{list(value.shape)}")
            print(value)


def cmd_report(args: argparse.Namespace) -> None:
    shapes = _shapes(args.input_shape)
    g = api.load_onnx(args.model, shapes)
    config = QuantConfig.from_file(args.config) if args.config else None
    if args.quantized is not None:
        if args.calib:
            raise ReportError(f"--calib is for quantizing {args.model} here, but "
                              f"{args.quantized} is given already quantized")
        q = api.load_onnx(args.quantized, shapes)
    else:
        q = api.quantize(g, args.calib or args.data, config)
    report = api.compare(g, q, args.data, config=config)
    if args.json == "-":
        print(report.to_json())
        return
    if args.json:
        with atomic_file(Path(args.json), "write the report to") as file:
            file.write((report.to_json() + "\n").encode("utf-8"))
    print(report)


def cmd_demo(args: argparse.Namespace) -> None:
    run_demo(Path(args.model), args.data, args.repeats)


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qcompiler", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, fn: Callable[[argparse.Namespace], None],
                help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks of errors")
        p.set_defaults(fn=fn)
        return p

    def input_shape(p: argparse.ArgumentParser) -> None:
        p.add_argument("--input-shape", action="append", type=_input_shape,
                       metavar="NAME=D0,D1,...", help="fix an input's dynamic dimensions")

    p = command("show", cmd_show, "print a model's IR")
    p.add_argument("model")
    input_shape(p)
    p.add_argument("--inline", action="store_true", help="print every constant inline")
    p.add_argument("--passes", metavar="PIPELINE",
                   help='run a pass pipeline first, e.g. "canonicalize,fold-bn,fuse"')
    p.add_argument("--print-ir-after", action="append", metavar="PASS",
                   help="print the IR to stderr after this pass (or 'all')")
    p.add_argument("--explain", action="store_true",
                   help="say why each pass left candidates alone (to stderr)")
    p.add_argument("--timing", action="store_true", help="per-pass timing (to stderr)")

    command("passes", cmd_passes, "list the registered passes and their options")

    p = command("compile", cmd_compile, "compile a model; save it and/or export it")
    p.add_argument("model")
    p.add_argument("-o", "--output", metavar="FILE.qcx",
                   help="write the executable as one data-only file (qcompiler run reads it)")
    p.add_argument("--emit-python", metavar="FOLDER",
                   help="write a standalone program that runs with numpy alone")
    p.add_argument("--backend", default="numpy", choices=available_backends())
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads each run splits large ops across (the llvm backend; default 1)")
    input_shape(p)
    p.add_argument("--passes", default=api.DEFAULT_FLOAT_PIPELINE, metavar="PIPELINE",
                   help="pass pipeline to run before compiling ('none' for none; default: "
                        "%(default)s)")
    p.add_argument("--calib", metavar="DATA.npz",
                   help="quantize (post-training), calibrating on these arrays (keyed by input)")
    p.add_argument("--config", metavar="QUANT.toml",
                   help="quantization config (.json or .toml; default: qc.QuantConfig())")

    p = command("run", cmd_run, "run a saved executable on inputs from an .npz file")
    p.add_argument("compiled", metavar="FILE.qcx")
    p.add_argument("inputs", metavar="INPUTS.npz")
    p.add_argument("-o", "--output", help=".npz file for the outputs (default: print them)")

    p = command("report", cmd_report,
                "per-layer error of a quantized model against its float model, worst first")
    p.add_argument("model", metavar="FLOAT.onnx")
    p.add_argument("quantized", metavar="QUANTIZED.onnx", nargs="?",
                   help="its quantized (QDQ) form; without it, FLOAT.onnx is quantized here "
                        "with --config")
    p.add_argument("data", metavar="DATA.npz",
                   help="inputs to measure on, keyed by input name (split into batches)")
    p.add_argument("--config", metavar="QUANT.toml",
                   help="the quantization config (.json or .toml): the one to quantize with, "
                        "and whose exclusions explain the ops left in float")
    p.add_argument("--calib", metavar="CALIB.npz",
                   help="calibration data when quantizing here (default: DATA.npz)")
    p.add_argument("--json", metavar="FILE",
                   help="also write the report as JSON ('-': print only the JSON)")
    input_shape(p)

    p = command("demo", cmd_demo, "compile the embedded model and report accuracy and speed")
    p.add_argument("--model", default=str(EXAMPLES / "digits_convnet.onnx"))
    p.add_argument("--data", default=str(EXAMPLES / "digits.npz"))
    p.add_argument("--repeats", type=_positive_int, default=20)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.debug:
        args.fn(args)
        return 0
    try:
        args.fn(args)
    except QCompilerError as exc:
        print(f"qcompiler: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): stop quietly
        sys.stdout = open(os.devnull, "w")  # Python flushes stdout at exit: let it go nowhere
        return 1
    except Exception as exc:  # a bug: still one line, the traceback is one flag away
        print(f"qcompiler: internal error: {type(exc).__name__}: {_one_line(exc)} (this is a "
              f"bug in qcompiler; --debug shows the traceback)", file=sys.stderr)
        return 3
    return 0


def _one_line(exc: Exception) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
