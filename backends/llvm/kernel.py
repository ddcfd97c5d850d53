"""What an op's native kernel is to the LLVM backend's runtime: the contract every emitter in
``kernels/`` follows.

An *emitter* turns one node of a graph whose shapes are all concrete into the calls that compute
it: ``emit(node, ctx) -> list[Call]``, run in order. It is registered for its op types with
``@emitter("IntConv", ...)``; every module of the ``kernels`` package is imported by the runtime,
so a new kernel module registers itself by being there. An emitter that cannot handle a node
(an attribute, dtype or operand form it has no kernel for) raises ``NotNative(reason)``: the
runtime then runs that node with its numpy reference kernel (the slow, exact path) and records
the reason.

A ``Call`` calls a ``Function`` with arguments:

- ``Buffer(value_name)``: a pointer to the bytes of that value of the graph (C order, its dtype;
  inputs, outputs, intermediates and constants alike);
- ``Const(array)``: a pointer to a copy of ``array`` (C order) in the model's constants, 64-byte
  aligned (packed weights, per-channel multipliers, tables: computed once, at compile time);
- ``Scratch(nbytes)``: a pointer to ``nbytes`` of 64-byte aligned workspace that is the calling
  thread's own and lives only during the call;
- ``Int(value)``: an ``i64``.

Every kernel function has the signature ``void @name(i64 %begin, i64 %end, <args>)``: a ``ptr``
for each ``Buffer``, ``Const`` and ``Scratch`` and an ``i64`` for each ``Int``, in order. The
work of a call is split into ``items`` independent parts (output rows, channels, elements: the
emitter chooses); the function computes the parts ``[begin, end)`` and must not write anything
another part writes. With ``threads=N`` the runtime gives each thread a contiguous share of
``[0, items)`` and waits for all of them before the next call; with one thread it calls
``(0, items)``. An emitter whose work does not split says ``items=1``.

A ``Function`` comes from ``ctx.function(base, key, ir)``: ``key`` is everything the IR text
depends on (shapes, constants baked into the code, dtypes, rounding, the target's AVX2), so
equal layers share one function (compiled once); ``ir(name)`` returns the LLVM IR text (LLVM 20,
opaque pointers) that defines ``@name`` and is called only when the model is compiled (not when
its compiled object is found in the cache). Every function that text defines is named ``name``
or ``name.something`` (private helpers) so that the texts of different functions can be linked
into one module; it may ``declare`` intrinsics and functions of other ``Function`` objects the
same emitter got from ``ctx`` (``ctx.function`` returns the same object for the same key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qcompiler.errors import BackendError
from qcompiler.graph import Node

from .target import Target


class NotNative(Exception):
    """An emitter has no native kernel for this node; the runtime runs its numpy kernel."""


@dataclass(frozen=True)
class Buffer:
    """A pointer to the bytes of the graph value named ``value``."""

    value: str


@dataclass(frozen=True, eq=False)
class Const:
    """A pointer to (a 64-byte aligned copy of) ``array`` in the model's constants."""

    array: np.ndarray


@dataclass(frozen=True)
class Scratch:
    """A pointer to ``nbytes`` of the calling thread's workspace, live during the call."""

    nbytes: int


@dataclass(frozen=True)
class Int:
    """An ``i64`` argument."""

    value: int


Arg = Buffer | Const | Scratch | Int


@dataclass(frozen=True, eq=False)
class Function:
    """A kernel function: its LLVM name, the IR text that defines it (made on demand) and the
    functions that text calls (``needs``: compiled with it, once per program)."""

    name: str
    ir: Callable[[], str]
    key: tuple = ()
    needs: tuple[Function, ...] = ()


@dataclass(frozen=True)
class Call:
    """``function(begin, end, *args)`` over ``items`` independent parts."""

    function: Function
    args: tuple[Arg, ...]
    items: int = 1

    def __post_init__(self) -> None:
        if self.items < 1:
            raise BackendError(f"a call of {self.function.name} must have one part or more, "
                               f"not {self.items}")
        for arg in self.args:
            if not isinstance(arg, (Buffer, Const, Scratch, Int)):
                raise BackendError(f"a call of {self.function.name} got the argument {arg!r}; "
                                   f"arguments are Buffer, Const, Scratch or Int")

    @property
    def signature(self) -> str:
        """The LLVM parameter types: ``i64, i64, ptr, ...``."""
        return ", ".join(["i64", "i64"] + ["i64" if isinstance(a, Int) else "ptr"
                                             for a in self.args])


@dataclass
class Context:
    """What emitters share while one graph is compiled: the target, the number of threads the
    calls' items are split across, and the functions made."""

    target: Target
    threads: int = 1
    functions: dict[str, Function] = field(default_factory=dict)

    @property
    def avx2(self) -> bool:
        return self.target.has("avx2")

    def function(self, base: str, key: tuple, ir: Callable[[str], str],
                 needs: tuple[Function, ...] = ()) -> Function:
        """The function for ``key`` (made once per key): named ``qc_<base>_<hash of key>``,
        defined by ``ir(name)``, which may call the functions ``needs`` (declared in its text).
        ``key`` must hold every input of ``ir`` (use ``repr``-stable values: ints, strings,
        tuples, bytes of small arrays)."""
        digest = hashlib.sha256(repr((base, key)).encode()).hexdigest()[:16]
        name = f"qc_{base}_{digest}"
        made = self.functions.get(name)
        if made is None:
            made = self.functions[name] = Function(name, lambda: ir(name), (base, key),
                                                    needs)
        return made


Emitter = Callable[[Node, Context], list[Call]]
EMITTERS: dict[str, Emitter] = {}


def emitter(*ops: str) -> Callable[[Emitter], Emitter]:
    """Register the decorated function as the emitter of the op types ``ops``."""

    def register(fn: Emitter) -> Emitter:
        for op in ops:
            if op in EMITTERS and EMITTERS[op] is not fn:
                raise BackendError(f"two LLVM emitters for {op}: {EMITTERS[op].__module__} and "
                                   f"{fn.__module__}")
            EMITTERS[op] = fn
        return fn

    return register


def attrs(node: Node) -> dict[str, Any]:
    """The node's attributes with the op's defaults filled in."""
    return node.opdef.full_attrs(node.attrs)
