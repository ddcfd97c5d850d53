"""The machine the LLVM backend compiles for, and compiling LLVM IR into callable code.

``host()`` reads the CPU's name and features at run time (llvmlite asks LLVM, which asks the
CPU), so a kernel may use AVX2 where the machine has it and stays correct on any x86-64;
``generic()`` is the baseline x86-64 (SSE2 only), the slower but exact path the tests also
compile for. ``Jit(target)`` turns IR text into machine code: the module is verified, then
optimized at -O3 with the loop and SLP vectorizers on (llvmlite's new pass manager: both are
tuning options, off unless asked), then JIT-compiled for the target; functions are looked up by
name and called through ``ctypes``.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import llvmlite.binding as llvm

from qcompiler.errors import BackendError

_INIT = threading.Lock()
_READY = False


def _initialize() -> None:
    global _READY
    with _INIT:
        if not _READY:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _READY = True


@dataclass(frozen=True)
class Target:
    """A CPU to compile for: LLVM's triple, CPU name and feature string (``+avx2,...``)."""

    triple: str
    cpu: str
    features: str

    def has(self, feature: str) -> bool:
        """Whether ``feature`` (``"avx2"``, ``"fma"``...) is on."""
        return f"+{feature}" in self.features.split(",")

    @property
    def key(self) -> str:
        """What compiled code depends on: a cache key part."""
        return f"{self.triple}/{self.cpu}/{self.features}"


def host() -> Target:
    """This machine's CPU, as LLVM detects it now."""
    _initialize()
    return Target(llvm.get_process_triple(), llvm.get_host_cpu_name(),
                  llvm.get_host_cpu_features().flatten())


def generic() -> Target:
    """The baseline x86-64 every 64-bit x86 CPU runs (SSE2, no AVX)."""
    _initialize()
    return Target(llvm.get_process_triple(), "x86-64", "")


def target_machine(target: Target) -> llvm.TargetMachine:
    _initialize()
    return llvm.Target.from_triple(target.triple).create_target_machine(
        cpu=target.cpu, features=target.features, opt=3, reloc="default", codemodel="jitdefault")


def optimize(module: llvm.ModuleRef, machine: llvm.TargetMachine) -> None:
    """-O3 with the loop and SLP vectorizers, tuned for ``machine``."""
    tuning = llvm.PipelineTuningOptions(speed_level=3)
    tuning.loop_vectorization = True
    tuning.slp_vectorization = True
    builder = llvm.PassBuilder(machine, tuning)
    builder.getModulePassManager().run(module, builder)


def _parsed(ir: str, name: str) -> llvm.ModuleRef:
    try:
        module = llvm.parse_assembly(ir)
        module.name = name
        module.verify()
    except RuntimeError as exc:
        raise BackendError(f"LLVM refused the generated module {name!r}: {exc}") from None
    return module


class Jit:
    """Machine code for LLVM IR modules on one target; keeps what it compiled alive."""

    def __init__(self, target: Target | None = None):
        self.target = target or host()
        self.machine = target_machine(self.target)
        self._engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), self.machine)

    def add(self, ir: str, name: str = "module") -> llvm.ModuleRef:
        """Verify, optimize and compile the IR text ``ir``; a ``BackendError`` names the module
        when LLVM refuses it (a code generator bug, not a user error)."""
        return self.add_linked([ir], name)

    def add_linked(self, irs: list[str], name: str = "module") -> llvm.ModuleRef:
        """Like ``add`` for several IR texts linked into one module (each may declare what
        another defines; equal declarations merge)."""
        module = self.optimized(irs, name)
        self._engine.add_module(module)
        self._engine.finalize_object()
        self._engine.run_static_constructors()
        return module

    def optimized(self, irs: list[str], name: str = "module") -> llvm.ModuleRef:
        """The IR texts parsed, verified, linked into one module and optimized for the
        target (not yet compiled)."""
        module = _parsed(irs[0], name)
        for i, ir in enumerate(irs[1:]):
            try:
                module.link_in(_parsed(ir, f"{name}.{i + 1}"))
            except RuntimeError as exc:
                raise BackendError(f"LLVM could not link the generated module {name!r}: "
                                   f"{exc}") from None
        module.triple = self.target.triple
        module.data_layout = str(self.machine.target_data)
        optimize(module, self.machine)
        return module

    def object_code(self, module: llvm.ModuleRef) -> bytes:
        """``module`` compiled to an object file for the target (what the cache keeps)."""
        return self.machine.emit_object(module)

    def load_object(self, code: bytes) -> None:
        """Make the functions of an object file from ``object_code`` callable."""
        self._engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        self._engine.finalize_object()

    def function(self, name: str, restype, *argtypes) -> ctypes._CFuncPtr:
        """The compiled function ``name`` as a ctypes function; it is valid while this
        ``Jit`` lives (keep a reference to it)."""
        address = self._engine.get_function_address(name)
        if not address:
            raise BackendError(f"no compiled function {name!r}")
        return ctypes.CFUNCTYPE(restype, *argtypes)(address)

    def assembly(self, module: llvm.ModuleRef) -> str:
        """The machine code of ``module`` as assembly text (to check what was emitted)."""
        return self.machine.emit_assembly(module)
