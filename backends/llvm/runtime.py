"""The LLVM backend's runtime: a graph with concrete shapes becomes a ``Program``, a static
schedule of native calls over one arena, compiled into one LLVM module.

Building a program:

1. every node goes to its op's emitter (``kernel.EMITTERS``, filled by the ``kernels``
   package), which returns the calls that compute it; a node without one (or whose emitter
   raises ``NotNative``) runs its numpy reference kernel instead, and the reason is recorded in
   ``Program.fallbacks``;
2. consecutive native nodes form a *segment*: one LLVM function ``qc_segment<i>(arena,
   constants, io, tid, threads)`` that calls their kernels in order with every pointer at a
   fixed offset. A graph whose every node is native is one segment, one native call per run;
3. values live in the caller's arrays (graph inputs and outputs, through the ``io`` table of
   pointers), in the constants (one aligned block made at compile time: weights and packed
   weights, multipliers, tables) or in the arena, at offsets from ``memory.place``: values and
   each call's scratch (one slice per thread) whose lifetimes meet never share a byte.

Threads: with ``threads=N`` the segment function runs on N threads at once (``tid`` 0..N-1);
each call gives thread ``tid`` the parts ``[items*tid/N, items*(tid+1)/N)`` of its work and all
threads meet at a barrier (in the arena) before the next call. Two threads may ``run`` the same
program at once: each run takes its own arena from a pool (a lock guards only the pool).
"""

from __future__ import annotations

import ctypes
import importlib
import pkgutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from qcompiler.errors import BackendError
from qcompiler.graph import Graph, Node, Value
from qcompiler.interpreter import Interpreter

from . import kernels
from .kernel import EMITTERS, Call, Const, Context, Int, NotNative, Scratch
from .memory import ALIGNMENT, place
from .target import Jit, Target, host

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
SEGMENT_ARGS = (_P, _P, _P, _I64, _I64)
BARRIER_BYTES = 64  # the arena's first cache line: the threads' barrier
GUARD = 64  # bytes of canary around every buffer when a program is built with check=True
CANARY = 0xA5


def load_kernels() -> None:
    """Import every module of the ``kernels`` package (each registers its emitters)."""
    for info in pkgutil.iter_modules(kernels.__path__):
        importlib.import_module(f"{kernels.__name__}.{info.name}")


@dataclass
class Segment:
    """Consecutive native nodes: their calls, and the LLVM function that makes them."""

    nodes: list[Node]
    calls: list[tuple[int, Call]]  # (step, call)
    name: str = ""
    fn: ctypes._CFuncPtr | None = None


@dataclass
class Fallback:
    """A node run by its numpy reference kernel, and why."""

    node: Node
    reason: str


# -- storage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a value's bytes are: ``("io", slot)``, ``("arena", offset)`` or
    ``("const", offset)``."""

    kind: str
    at: int


class _Constants:
    """The constants block: arrays placed at aligned offsets, each array once."""

    def __init__(self) -> None:
        self.arrays: list[tuple[int, np.ndarray]] = []
        self._by_id: dict[int, int] = {}
        self._held: list[np.ndarray] = []  # keeps each id() unique while the block is built
        self.size = 0

    def offset(self, array: np.ndarray) -> int:
        known = self._by_id.get(id(array))
        if known is not None:
            return known
        at = _aligned(self.size)
        data = np.ascontiguousarray(array)
        self.arrays.append((at, data))
        self._by_id[id(array)] = at
        self._held.append(array)
        self.size = at + data.nbytes
        return at

    def block(self) -> np.ndarray:
        block = aligned_empty(max(self.size, 1))
        for at, data in self.arrays:
            block[at:at + data.nbytes] = data.reshape(-1).view(np.uint8)
        return block


def aligned_empty(nbytes: int) -> np.ndarray:
    """``nbytes`` zeroed bytes starting on a 64-byte boundary."""
    raw = np.zeros(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes]


def _aligned(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


# -- the program -------------------------------------------------------------------------------


class Program:
    """``graph`` (every shape concrete) compiled for ``target``: ``run(arrays)`` runs it."""

    def __init__(self, graph: Graph, target: Target | None = None, threads: int = 1,
                 check: bool = False):
        load_kernels()
        self.graph = graph
        self.threads = threads
        self.check = check
        self.context = Context(target or host())
        self.steps: list[Segment | Fallback] = []
        self._emit()
        self._place()
        self._compile()
        self._arenas: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads - 1) if threads > 1 else None
        self._interpreter = Interpreter(graph)

    @property
    def fallbacks(self) -> list[Fallback]:
        return [s for s in self.steps if isinstance(s, Fallback)]

    def _emit(self) -> None:
        for step, node in enumerate(self.graph.nodes):
            emit = EMITTERS.get(node.op)
            try:
                if emit is None:
                    raise NotNative(f"no LLVM kernel for {node.op}")
                calls = emit(node, self.context)
            except NotNative as exc:
                self.steps.append(Fallback(node, str(exc)))
                continue
            if not self.steps or not isinstance(self.steps[-1], Segment):
                self.steps.append(Segment([], []))
            segment = self.steps[-1]
            segment.nodes.append(node)
            segment.calls += [(step, call) for call in calls]

    def _place(self) -> None:
        graph = self.graph
        self.io: list[Value] = list(graph.inputs)
        for value in graph.outputs:
            if value.producer is not None and value not in self.io:
                self.io.append(value)
        self.where: dict[str, Where] = {v.name: Where("io", i) for i, v in enumerate(self.io)}
        self.constants = _Constants()
        blocks: dict[str, tuple[int, tuple[int, int]]] = {}
        last = len(graph.nodes)
        for step, node in enumerate(graph.nodes):
            for value in node.outputs:
                if value.name not in self.where:
                    blocks[value.name] = (_nbytes(value), (step, step))
            for value in node.inputs:
                if value is None:
                    continue
                if value.is_constant:
                    self.where.setdefault(value.name, Where(
                        "const", self.constants.offset(value.data)))
                elif value.name in blocks:
                    size, (first, _) = blocks[value.name]
                    blocks[value.name] = (size, (first, step))
        self.scratch: dict[int, str] = {}  # id(Scratch) -> its block
        payload = {name: size for name, (size, _) in blocks.items()}
        for segment in self.segments:
            for step, call in segment.calls:
                for arg in call.args:
                    if isinstance(arg, Const):
                        self.constants.offset(arg.array)
                    elif isinstance(arg, Scratch):
                        name = f"scratch.{step}.{id(arg)}"
                        self.scratch[id(arg)] = name
                        payload[name] = arg.nbytes
                        blocks[name] = (self._stride(arg) * self.threads, (step, step))
        guard = GUARD if self.check else 0
        if self.check:  # nothing shared, a guard before and after every block
            blocks = {name: (size + 2 * guard, (0, last)) for name, (size, _) in blocks.items()}
        plan = place(blocks)
        self.where.update({name: Where("arena", BARRIER_BYTES + offset + guard)
                           for name, offset in plan.offsets.items()
                           if not name.startswith("scratch.")})
        self._scratch_at = {key: BARRIER_BYTES + plan.offsets[name] + guard
                            for key, name in self.scratch.items()}
        self.arena_bytes = BARRIER_BYTES + plan.size
        self.plan = plan
        self._payload = np.zeros(self.arena_bytes, bool)  # the bytes kernels may write
        self._payload[:BARRIER_BYTES] = True
        for name, (size, _) in blocks.items():
            start = BARRIER_BYTES + plan.offsets[name] + guard
            stride = (size - 2 * guard) // self.threads if name.startswith("scratch.") else 0
            for tid in range(self.threads if stride else 1):
                self._payload[start + tid * stride:start + tid * stride + payload[name]] = True

    def _stride(self, scratch: Scratch) -> int:
        """Bytes between two threads' slices of a scratch block (a guard between in checks)."""
        return _aligned(scratch.nbytes) + (GUARD if self.check else 0)

    @property
    def segments(self) -> list[Segment]:
        return [s for s in self.steps if isinstance(s, Segment)]

    def _compile(self) -> None:
        texts, functions = [_BARRIER], {}
        for i, segment in enumerate(self.segments):
            segment.name = f"qc_segment{i}"
            texts.append(self._segment_ir(segment))
            for _, call in segment.calls:
                for fn in (call.function, *call.function.needs):
                    functions[fn.name] = fn
        texts += [fn.ir() for fn in functions.values()]
        self.jit = Jit(self.context.target)
        self.module = self.jit.add_linked(texts, self.graph.name)
        for segment in self.segments:
            segment.fn = self.jit.function(segment.name, None, *SEGMENT_ARGS)
        self._constant_block = self.constants.block()
        self._pristine = self._constant_block.copy() if self.check else None

    def _segment_ir(self, segment: Segment) -> str:
        lines, declared = [], {}
        for j, (_, call) in enumerate(segment.calls):
            fn = call.function.name
            declared[fn] = f"declare void @{fn}({call.signature})"
            args = [f"i64 %b{j}", f"i64 %e{j}"]
            for k, arg in enumerate(call.args):
                reg = f"%c{j}.{k}"
                if isinstance(arg, Int):
                    args.append(f"i64 {int(arg.value)}")
                    continue
                if isinstance(arg, Const):
                    base, at = "%consts", self.constants.offset(arg.array)
                elif isinstance(arg, Scratch):
                    lines.append(f"  {reg}.s = mul i64 %tid, {self._stride(arg)}")
                    lines.append(f"  {reg}.o = add i64 {reg}.s, {self._scratch_at[id(arg)]}")
                    lines.append(f"  {reg} = getelementptr i8, ptr %arena, i64 {reg}.o")
                    args.append(f"ptr {reg}")
                    continue
                else:
                    where = self.where.get(arg.value)
                    if where is None:
                        raise BackendError(f"a kernel reads %{arg.value}, which is not a value "
                                           f"of graph {self.graph.name!r}")
                    if where.kind == "io":
                        lines.append(f"  {reg}.at = getelementptr ptr, ptr %io, i64 {where.at}")
                        lines.append(f"  {reg} = load ptr, ptr {reg}.at")
                        args.append(f"ptr {reg}")
                        continue
                    base = "%consts" if where.kind == "const" else "%arena"
                    at = where.at
                lines.append(f"  {reg} = getelementptr i8, ptr {base}, i64 {at}")
                args.append(f"ptr {reg}")
            items = call.items
            lines += [f"  %b{j}.m = mul i64 %tid, {items}",
                      f"  %b{j} = udiv i64 %b{j}.m, %threads",
                      f"  %e{j}.t = add i64 %tid, 1",
                      f"  %e{j}.m = mul i64 %e{j}.t, {items}",
                      f"  %e{j} = udiv i64 %e{j}.m, %threads",
                      f"  call void @{fn}({', '.join(args)})"]
            if j + 1 < len(segment.calls):
                lines.append("  call void @qc_barrier(ptr %arena, i64 %threads)")
        body = "\n".join(lines)
        return ("declare void @qc_barrier(ptr, i64)\n" + "\n".join(declared.values()) +
                f"\n\ndefine void @{segment.name}(ptr %arena, ptr %consts, ptr %io, i64 %tid, "
                f"i64 %threads) {{\nentry:\n{body}\n  ret void\n}}\n")

    # -- running ---------------------------------------------------------------------------------

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The outputs for inputs that have the graph's dtypes and shapes (checked before).
        A program built with ``check=True`` runs on guarded copies and raises a
        ``BackendError`` naming the buffer a kernel wrote outside of."""
        inputs = [np.ascontiguousarray(a) for a in arrays]
        outs = [np.empty(_shape(v), v.dtype.np) for v in self.io[len(inputs):]]
        held = inputs + outs
        guards = [_guarded(a) for a in held] if self.check else []
        if guards:
            held = [copy for copy, _ in guards]
        io = (ctypes.c_void_p * max(len(held), 1))(*[a.ctypes.data for a in held])
        arena = self._take_arena()
        try:
            if self.check:
                arena[BARRIER_BYTES:] = CANARY
            for step in self.steps:
                if isinstance(step, Segment):
                    self._run_segment(step, arena, io)
                else:
                    self._run_fallback(step.node, arena, held)
            if self.check:
                self._check_guards(arena, guards)
        finally:
            with self._lock:
                self._arenas.append(arena)
        results, given = [], set()
        for value in self.graph.outputs:
            array = self._array(value, arena, held)
            fresh = not self.check and value.producer is not None and value.name not in given
            given.add(value.name)
            results.append(array if fresh else array.copy())
        return results

    def _check_guards(self, arena: np.ndarray,
                      guards: list[tuple[np.ndarray, np.ndarray]]) -> None:
        wrote = np.flatnonzero((arena != CANARY) & ~self._payload)
        if wrote.size:
            at = int(wrote[0])
            near = min((w for w in self.where.items() if w[1].kind == "arena"),
                       key=lambda item: abs(item[1].at - at), default=("?", None))[0]
            raise BackendError(f"a kernel wrote arena byte {at}, outside every buffer "
                               f"(nearest: %{near})")
        for value, (_, base) in zip(self.io, guards, strict=True):
            if not (np.all(base[:GUARD] == CANARY) and np.all(base[-GUARD:] == CANARY)):
                raise BackendError(f"a kernel wrote outside %{value.name}")
        if not np.array_equal(self._constant_block, self._pristine):
            raise BackendError("a kernel wrote into the constants")

    def _take_arena(self) -> np.ndarray:
        with self._lock:
            if self._arenas:
                return self._arenas.pop()
        return aligned_empty(self.arena_bytes)

    def _run_segment(self, segment: Segment, arena: np.ndarray, io) -> None:
        args = (arena.ctypes.data, self._constant_block.ctypes.data, ctypes.addressof(io))
        if self._pool is None:
            segment.fn(*args, 0, 1)
            return
        others = [self._pool.submit(segment.fn, *args, tid, self.threads)
                  for tid in range(1, self.threads)]
        segment.fn(*args, 0, self.threads)
        for other in others:
            other.result()

    def _array(self, value: Value, arena: np.ndarray, held: list[np.ndarray]) -> np.ndarray:
        if value.is_constant:
            return value.data
        where = self.where[value.name]
        if where.kind == "io":
            return held[where.at]
        return np.ndarray(_shape(value), value.dtype.np, buffer=arena, offset=where.at)

    def _run_fallback(self, node: Node, arena: np.ndarray, held: list[np.ndarray]) -> None:
        inputs = [None if v is None else self._array(v, arena, held) for v in node.inputs]
        results = self._interpreter.run_node(node, inputs)
        for value, result in zip(node.outputs, results, strict=True):
            target = self._array(value, arena, held)
            if result.shape != target.shape or result.dtype != target.dtype:
                raise BackendError(f"{node.describe()}: its numpy kernel gave "
                                   f"{result.dtype}{list(result.shape)} for "
                                   f"%{value.name}: {value.type}")
            np.copyto(target, result)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def _guarded(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``array`` inside a block with ``GUARD`` canary bytes before and after it:
    (the copy, the block)."""
    block = aligned_empty(array.nbytes + 2 * GUARD)
    block[:] = CANARY
    copy = np.ndarray(array.shape, array.dtype, buffer=block, offset=GUARD)
    copy[...] = array
    return copy, block


def _shape(value: Value) -> tuple[int, ...]:
    if not all(isinstance(d, int) for d in value.shape):
        raise BackendError(f"%{value.name} has the shape {list(value.shape)}; the LLVM backend "
                           f"compiles for concrete shapes")
    return tuple(value.shape)


def _nbytes(value: Value) -> int:
    return int(np.prod(_shape(value), dtype=np.int64)) * value.dtype.np.itemsize


# A barrier for ``threads`` threads over two i64 words (arrivals, generation) at ``%b``: the
# last thread to arrive resets the count and moves the generation on; the others spin (with
# the x86 pause hint) until it moves. One thread passes straight through.
_BARRIER = """
declare void @llvm.x86.sse2.pause()

define void @qc_barrier(ptr %b, i64 %threads) {
entry:
  %alone = icmp ule i64 %threads, 1
  br i1 %alone, label %done, label %arrive

arrive:
  %gen.at = getelementptr i64, ptr %b, i64 1
  %gen = load atomic i64, ptr %gen.at acquire, align 8
  %before = atomicrmw add ptr %b, i64 1 acq_rel
  %last.n = add i64 %threads, -1
  %last = icmp eq i64 %before, %last.n
  br i1 %last, label %release, label %wait

release:
  store atomic i64 0, ptr %b monotonic, align 8
  %gen.next = add i64 %gen, 1
  store atomic i64 %gen.next, ptr %gen.at release, align 8
  br label %done

wait:
  call void @llvm.x86.sse2.pause()
  %now = load atomic i64, ptr %gen.at acquire, align 8
  %same = icmp eq i64 %now, %gen
  br i1 %same, label %wait, label %done

done:
  ret void
}
"""
