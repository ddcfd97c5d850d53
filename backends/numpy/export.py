"""Export a graph as a standalone program that runs with numpy alone.

The folder holds::

    model.py          the generated source, the model's input contract and a small loader:
                      ``python model.py inputs.npz outputs.npz``
    qc_ops/           a copy of the op kernels (they import only numpy)
    input_check.py    a copy of ``qcompiler.input_check``: the program checks its inputs'
                      names, dtypes and shapes exactly as ``Executable.run`` does
    constants.npz     the constants the source reads as ``C[name]`` (no pickled objects)

This is code, meant to be read and run by the user; the data-only form that ``qc.load`` reads
is the ``.qcx`` file written by ``Executable.save``.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from qcompiler import input_check, ops
from qcompiler.errors import SaveError
from qcompiler.executable import input_specs
from qcompiler.graph import Graph

from .codegen import generate

ENTRIES = ("model.py", "qc_ops", "input_check.py", "constants.npz")

_LOADER = '''

# -- added by qcompiler's export: run this folder with numpy alone ------------------------------


def load():
    """The constants ``C``, the kernels ``K`` that ``run(C, K, *inputs)`` needs, and the
    input checker."""
    import importlib.util
    import os
    import sys
    import types

    import numpy as np

    here = os.path.dirname(os.path.abspath(__file__))

    def module(name, path, package=False):
        spec = importlib.util.spec_from_file_location(
            name, path, submodule_search_locations=[os.path.dirname(path)] if package else None)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # a package's relative imports look itself up here
        spec.loader.exec_module(mod)
        return mod

    suffix = format(id(load), "x")
    ops = module("qc_ops_" + suffix, os.path.join(here, "qc_ops", "__init__.py"), True)
    check = module("qc_input_check_" + suffix, os.path.join(here, "input_check.py"))
    kernels = types.SimpleNamespace(**{n: d.kernel for n, d in ops.OPS.items()})
    with np.load(os.path.join(here, "constants.npz"), allow_pickle=False) as data:
        constants = {k: data[k] for k in data.files}
    return constants, kernels, check


def main(argv):
    """``model.py INPUTS.npz OUTPUTS.npz``; a wrong input is one line on stderr, exit 2."""
    import sys

    import numpy as np

    def fail(message):
        print(f"model.py: error: {message}", file=sys.stderr)
        return 2

    if len(argv) != 3:
        return fail("usage: python model.py INPUTS.npz OUTPUTS.npz")
    C, K, check = load()
    specs = [check.InputSpec(*spec) for spec in INPUTS]
    try:
        results = run(C, K, *check.check_feeds(specs, check.read_feeds(argv[1])))
    except check.InputCheckError as exc:
        return fail(exc)
    try:
        check.write_arrays(argv[2], dict(zip(OUTPUTS, results)))
    except OSError as exc:
        return fail(f"cannot write the outputs {argv[2]!r}: {exc}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv))
'''


def export_python(graph: Graph, folder: Path) -> Path:
    """Write the folder described in this module's docstring and return it.

    The folder is written beside the target and renamed into place; an existing folder is
    replaced only if it holds nothing but an earlier export, so no user file is ever deleted.
    """
    folder = folder.resolve()  # "." and "" name the folder they mean
    _check_replaceable(folder)
    program = generate(graph)
    specs = [(s.name, s.dtype, s.numpy_dtype, s.shape) for s in input_specs(graph)]
    staging = folder.with_name(f".{folder.name}.{secrets.token_hex(6)}.tmp")
    try:
        staging.mkdir()
        shutil.copytree(Path(ops.__file__).parent, staging / "qc_ops",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copyfile(input_check.__file__, staging / "input_check.py")
        input_check.write_arrays(staging / "constants.npz", program.constants)
        names = f"INPUTS = {specs!r}\nOUTPUTS = {[v.name for v in graph.outputs]!r}\n"
        (staging / "model.py").write_text(program.source + "\n" + names + _LOADER)
        _swap_into_place(staging, folder)
    except OSError as exc:
        raise SaveError(f"cannot export to {str(folder)!r}: {exc.strerror or exc}; nothing was "
                        f"written") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _check_replaceable(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise SaveError(f"cannot export to {str(folder)!r}: it is a file, not a folder")
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir()
                         if p.name not in ENTRIES and p.name != "__pycache__")
        if foreign:
            raise SaveError(f"cannot export to {str(folder)!r}: the folder holds files that are "
                            f"not an earlier export ({', '.join(foreign[:5])}); choose an empty "
                            f"or new folder")


def _swap_into_place(staging: Path, folder: Path) -> None:
    if not folder.exists():
        staging.rename(folder)
        return
    old = folder.with_name(f".{folder.name}.{secrets.token_hex(6)}.old")
    folder.rename(old)
    try:
        staging.rename(folder)
    except OSError:
        old.rename(folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
