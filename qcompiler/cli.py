"""The ``qcompiler`` command line: show, passes, compile, run and demo."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from . import api
from .errors import QCompilerError
from .graph import Graph
from .pass_manager import PassManager, available_passes, get_pass
from .peer import ort_session
from .timing import median_time

EXAMPLES = Path(str(resources.files("qcompiler.examples")))


def _shapes(items: list[str] | None) -> dict[str, list[int | str]] | None:
    """``--input-shape image=1,1,8,8`` options as a mapping."""
    if not items:
        return None
    shapes: dict[str, list[int | str]] = {}
    for item in items:
        name, _, dims = item.partition("=")
        shapes[name] = [int(d) if d.lstrip("-").isdigit() else d for d in dims.split(",")]
    return shapes


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
        options = " ".join(f"{k}={_default(p, k)}" for k in type(p).option_types())
        print(f"{name:<16} {doc}")
        if options:
            print(f"{'':<16} options: {options}")


def _default(p: object, key: str) -> str:
    value = getattr(p, key)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def cmd_compile(args: argparse.Namespace) -> None:
    g = _optimize(api.load_onnx(args.model, _shapes(args.input_shape)), args)
    exe = api.compile(g, backend=args.backend)
    exe.save(args.output)
    print(f"compiled {args.model} with the {args.backend} backend into {args.output}")


def cmd_run(args: argparse.Namespace) -> None:
    exe = api.load(args.compiled)
    with np.load(args.inputs, allow_pickle=False) as data:
        feeds = {k: data[k] for k in data.files}
    outputs = exe.run(feeds)
    if args.output:
        np.savez(args.output, **outputs)
        print(f"wrote {', '.join(outputs)} to {args.output}")
    else:
        for name, value in outputs.items():
            print(f"{name}: {value.dtype}{list(value.shape)}")
            print(value)


def cmd_demo(args: argparse.Namespace) -> None:
    model = Path(args.model)
    with np.load(args.data, allow_pickle=False) as data:
        x, y = data["test_x"], data["test_y"]
    imported = api.load_onnx(model)
    print(f"model  {model.name}: {len(imported.nodes)} nodes, {len(x)} test images")
    g = api.optimize(imported)
    print(f"passes {api.DEFAULT_FLOAT_PIPELINE}: {len(imported.nodes)} -> {len(g.nodes)} nodes "
          f"({', '.join(f'{n} {op}' for op, n in sorted(g.op_counts().items()))})")
    exe = api.compile(g, backend="numpy")
    logits = exe.run({g.inputs[0].name: x})[g.outputs[0].name]
    accuracy = float((logits.argmax(axis=1) == y).mean())
    print(f"numpy backend (fp32)  accuracy {accuracy:.3f}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime is not installed: no comparison (pip install qcompiler[bench])")
        return
    sess = ort_session(model)
    ref = sess.run(None, {g.inputs[0].name: x})[0]
    ref_acc = float((ref.argmax(axis=1) == y).mean())
    diff = float(np.max(np.abs(ref - logits)))
    print(f"onnxruntime (fp32)    accuracy {ref_acc:.3f}   max |logit difference| {diff:.2e}")
    ours = median_time(lambda: exe.run({g.inputs[0].name: x}), args.repeats)
    theirs = median_time(lambda: sess.run(None, {g.inputs[0].name: x}), args.repeats)
    threads = ("one thread each" if os.environ.get("OPENBLAS_NUM_THREADS") == "1" else
               "onnxruntime on one thread, numpy on its BLAS's default threads")
    print(f"time for the test set: numpy backend / onnxruntime = {ours / theirs:.2f}x "
          f"(median of {args.repeats}; {threads})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qcompiler", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("show", help="print a model's IR")
    p.add_argument("model")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    p.add_argument("--inline", action="store_true", help="print every constant inline")
    p.add_argument("--passes", metavar="PIPELINE",
                   help='run a pass pipeline first, e.g. "canonicalize,fold-bn,fuse"')
    p.add_argument("--print-ir-after", action="append", metavar="PASS",
                   help="print the IR to stderr after this pass (or 'all')")
    p.add_argument("--explain", action="store_true",
                   help="say why each pass left candidates alone (to stderr)")
    p.add_argument("--timing", action="store_true", help="per-pass timing (to stderr)")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("passes", help="list the registered passes and their options")
    p.set_defaults(fn=cmd_passes)

    p = sub.add_parser("compile", help="compile a model and save the executable")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, help="folder to write")
    p.add_argument("--backend", default="numpy")
    p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...")
    p.add_argument("--passes", default=api.DEFAULT_FLOAT_PIPELINE, metavar="PIPELINE",
                   help="pass pipeline to run before compiling ('none' for none; default: "
                        "%(default)s)")
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser("run", help="run a saved executable on inputs from an .npz file")
    p.add_argument("compiled")
    p.add_argument("inputs")
    p.add_argument("-o", "--output", help=".npz file for the outputs (default: print them)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("demo", help="compile the embedded model and report accuracy and speed")
    p.add_argument("--model", default=str(EXAMPLES / "digits_convnet.onnx"))
    p.add_argument("--data", default=str(EXAMPLES / "digits.npz"))
    p.add_argument("--repeats", type=int, default=20)
    p.set_defaults(fn=cmd_demo)

    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except QCompilerError as exc:
        print(f"qcompiler: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
