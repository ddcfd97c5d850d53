"""The LLVM backend's runtime: a graph with concrete shapes becomes a ``Program``, a static
schedule of native calls over one arena, compiled into one LLVM module.

Building a program:

1. every node goes to its op's emitter (``kernel.EMITTERS``, filled by the ``kernels``
   package), which returns the calls that compute it; a node without one (or whose emitter
   raises ``NotNative``) runs its numpy reference kernel instead, and the reason is recorded in
   ``Program.fallbacks``;
2. consecutive native nodes form a *segment*: one LLVM function ``qc_segment<i>(arena,
   constants, tid, threads)`` that calls their kernels in order with every pointer at a
   fixed offset. A graph whose every node is native is one segment, one native call per run;
3. values live in the constants (one aligned block made at compile time: weights and packed
   weights, multipliers, tables) or in the arena, at offsets from ``memory.place``: values
   (the graph's inputs and outputs too) and each call's scratch (one slice per thread) whose
   lifetimes meet never share a byte. A run copies its inputs into the arena and its outputs
   out of it (views made once per arena): no pointer is looked up on the hot path.

Threads: with ``threads=N`` the segment function runs on N threads at once (``tid`` 0..N-1);
each call gives thread ``tid`` the parts ``[items*tid/N, items*(tid+1)/N)`` of its work and all
threads meet at a barrier (in the arena) before the next call. A segment with too little work
to pay for waking the other threads (``PARALLEL_WORK``, about the multiply-adds of its nodes)
runs on the calling thread alone. Two threads may ``run`` the same program at once: each run
takes its own arena from a pool (a lock guards only the pool).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import pkgutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from qcompiler.errors import BackendError
from qcompiler.graph import Graph, Node, Value
from qcompiler.interpreter import Interpreter

from . import cache, kernels
from .kernel import EMITTERS, Call, Const, Context, Int, NotNative, Scratch
from .memory import ALIGNMENT, place
from .target import Jit, Target, host

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
SEGMENT_ARGS = (_P, _P, _I64, _I64)
BARRIER_BYTES = 64  # the arena's first cache line: the threads' barrier
GUARD = 64  # bytes of canary around every buffer when a program is built with check=True
# a segment runs on several threads when its nodes' work (``node_work``: multiply-adds, or
# elements moved) reaches this: below it, handing the other threads their share and meeting
# them costs more than it saves (measured on the demo model: 166k multiply-adds per image)
PARALLEL_WORK = 1 << 21
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
    work: int = 0  # node_work of its nodes


@dataclass
class Fallback:
    """A node run by its numpy reference kernel, and why."""

    node: Node
    reason: str


# -- storage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a value's bytes are: ``("arena", offset)`` or ``("const", offset)``."""

    kind: str
    at: int


class _Constants:
    """The constants block: arrays placed at aligned offsets, equal arrays (dtype, shape and
    bytes) once. Merged by content, never by object: the offsets are baked into the machine
    code the disk cache shares, whose key sees the graph's constants by name and bytes only,
    so whether two equal constants are one numpy object must not change the layout."""

    def __init__(self) -> None:
        self.arrays: list[tuple[int, np.ndarray]] = []
        self._by_content: dict[tuple, int] = {}
        self._by_id: dict[int, int] = {}  # a faster path to the same answer, for repeats
        self._held: list[np.ndarray] = []  # keeps each id() unique while the block is built
        self.size = 0

    def offset(self, array: np.ndarray) -> int:
        known = self._by_id.get(id(array))
        if known is not None:
            return known
        data = np.ascontiguousarray(array)
        content = (data.dtype.str, data.shape, hashlib.sha256(data.tobytes()).digest())
        at = self._by_content.get(content)
        if at is None:
            at = self._by_content[content] = _aligned(self.size)
            self.arrays.append((at, data))
            self.size = at + data.nbytes
        self._by_id[id(array)] = at
        self._held.append(array)
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
                 check: bool = False, profile: bool = False,
                 parallel_work: int = PARALLEL_WORK):
        load_kernels()
        self.graph = graph
        self.threads = threads
        self.check = check
        self.profile = profile  # one segment per node, so ``timings`` can time each
        self.parallel_work = parallel_work  # a segment's work that is split across threads
        self.context = Context(target or host(), threads)
        self.steps: list[Segment | Fallback] = []
        self._emit()
        self._place()
        self._compile()
        self._arenas: list[_Arena] = []
        self._pool = ThreadPoolExecutor(threads - 1) if threads > 1 else None
        self._interpreter = Interpreter(graph)

    @property
    def fallbacks(self) -> list[Fallback]:
        return [s for s in self.steps if isinstance(s, Fallback)]

    @property
    def kernels(self) -> dict[str, list[str]]:
        """Per node (by name, in node order) the kernels its native calls run: each function's
        name without its signature hash (``qc_int_conv_pmaddubsw``: the per-layer decisions
        the emitters made); none for a node that needs no code (a reshape), ``["numpy"]`` for
        one run by its numpy kernel."""
        kernels: dict[str, list[str]] = {node.name: [] for node in self.graph.nodes}
        for step in self.steps:
            if isinstance(step, Fallback):
                kernels[step.node.name] = ["numpy"]
                continue
            for index, call in step.calls:
                kernels[self.graph.nodes[index].name].append(
                    call.function.name.rsplit("_", 1)[0])
        return kernels

    def _emit(self) -> None:
        self.aliases: dict[str, str] = {}  # value -> the value whose bytes it is
        for step, node in enumerate(self.graph.nodes):
            emit = EMITTERS.get(node.op)
            try:
                if _is_alias(node):
                    source = node.inputs[0].name
                    self.aliases[node.outputs[0].name] = self.aliases.get(source, source)
                    emit = _no_calls
                elif emit is None:
                    raise NotNative(f"no LLVM kernel for {node.op}")
                calls = emit(node, self.context)
            except NotNative as exc:
                self.steps.append(Fallback(node, str(exc)))
                continue
            if self.profile or not self.steps or not isinstance(self.steps[-1], Segment):
                self.steps.append(Segment([], []))
            segment = self.steps[-1]
            segment.nodes.append(node)
            segment.calls += [(step, call) for call in calls]

    def _place(self) -> None:
        graph = self.graph
        self.where: dict[str, Where] = {}
        self.constants = _Constants()
        last = len(graph.nodes)
        blocks = {v.name: (_nbytes(v), (-1, -1)) for v in graph.inputs}

        def used(name: str, step: int) -> None:  # an alias keeps its source's bytes alive
            name = self.aliases.get(name, name)
            size, (first, _) = blocks[name]
            blocks[name] = (size, (first, step))

        for step, node in enumerate(graph.nodes):
            for value in node.outputs:
                if value.name not in self.aliases:
                    blocks[value.name] = (_nbytes(value), (step, step))
            for value in node.inputs:
                if value is None:
                    continue
                if value.is_constant:
                    self.where.setdefault(value.name, Where(
                        "const", self.constants.offset(value.data)))
                else:
                    used(value.name, step)
        for value in graph.outputs:
            if not value.is_constant:
                used(value.name, last)
        self.scratch: dict[int, str] = {}  # id(Scratch) -> its block
        payload = {name: size for name, (size, _) in blocks.items()}
        for segment in self.segments:
            for step, call in segment.calls:
                for arg in call.args:
                    if isinstance(arg, Const):
                        self.constants.offset(arg.array)
                    elif isinstance(arg, Scratch):
                        # named by its order, never by anything of this process (an id): the
                        # layout is baked into the code, which the cache shares between runs
                        name = f"scratch.{step}.{len(self.scratch)}"
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
        self.where.update({alias: self.where[source] for alias, source in self.aliases.items()})
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
        """Machine code for the segments: from the cache when it holds this program (no IR is
        generated then), else generated, compiled and stored."""
        for i, segment in enumerate(self.segments):
            segment.name = f"qc_segment{i}"
            segment.work = sum(node_work(node) for node in segment.nodes)
        self.jit = Jit(self.context.target)
        segments = [self._segment_ir(segment) for segment in self.segments]
        self.cache_key = cache.key(self.graph, self.context.target, self.threads,
                                   self.check, segments)
        code = cache.load(self.cache_key) if self.segments else None
        self.cached = code is not None
        if code is None and self.segments:
            code = self.jit.object_code(self.jit.optimized(self._texts(segments),
                                                           self.graph.name))
            cache.store(self.cache_key, code)
        if code is not None:
            self.jit.load_object(code)
        for segment in self.segments:
            segment.fn = self.jit.function(segment.name, None, *SEGMENT_ARGS)
        self._constant_block = self.constants.block()
        self._constants_address = self._constant_block.ctypes.data
        self._pristine = self._constant_block.copy() if self.check else None

    def _texts(self, segments: list[str] | None = None) -> list[str]:
        """The program's LLVM IR: the barrier, the segments (their texts ``segments`` when
        made already) and every kernel they call."""
        if segments is None:
            segments = [self._segment_ir(segment) for segment in self.segments]
        texts, functions = [_BARRIER, *segments], {}
        for segment in self.segments:
            for _, call in segment.calls:
                for fn in (call.function, *call.function.needs):
                    functions[fn.name] = fn
        return texts + [fn.ir() for fn in functions.values()]

    def assembly(self) -> str:
        """The program's machine code as assembly text (compiled again, to read it)."""
        return self.jit.assembly(self.jit.optimized(self._texts(), self.graph.name))

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
                      f"  call void @{fn}({', '.join(args)}) #0"]
            if j + 1 < len(segment.calls):
                lines.append("  call void @qc_barrier(ptr %arena, i64 %threads)")
        body = "\n".join(lines)
        return ("declare void @qc_barrier(ptr, i64)\n" + "\n".join(declared.values()) +
                f"\n\ndefine void @{segment.name}(ptr %arena, ptr %consts, i64 %tid, "
                f"i64 %threads) {{\nentry:\n{body}\n  ret void\n}}\n"
                "attributes #0 = { noinline }\n")

    # -- running ---------------------------------------------------------------------------------

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The outputs for inputs that have the graph's dtypes and shapes (checked before).
        A program built with ``check=True`` raises a ``BackendError`` naming the buffer a
        kernel wrote outside of."""
        try:
            arena = self._arenas.pop()  # list.pop and append are atomic: no lock needed
        except IndexError:
            arena = _Arena(self)
        try:
            if self.check:
                arena.bytes[BARRIER_BYTES:] = CANARY
            for view, array in zip(arena.inputs, arrays, strict=True):
                view[...] = array
            for step in self.steps:
                if isinstance(step, Segment):
                    self._run_segment(step, arena)
                else:
                    self._run_fallback(step.node, arena)
            if self.check:
                self._check_guards(arena.bytes)
            return [view.copy() for view in arena.outputs]
        finally:
            self._arenas.append(arena)

    def timings(self, arrays: list[np.ndarray], repeats: int = 10) -> list[tuple[Node, float]]:
        """Seconds each node takes (the median of ``repeats`` runs; a program built with
        ``profile=True`` runs each node as its own step), in node order."""
        arena = _Arena(self)
        for view, array in zip(arena.inputs, arrays, strict=True):
            view[...] = array
        times: dict[int, list[float]] = {}
        for _ in range(repeats):
            for i, step in enumerate(self.steps):
                start = time.perf_counter()
                if isinstance(step, Segment):
                    self._run_segment(step, arena)
                else:
                    self._run_fallback(step.node, arena)
                times.setdefault(i, []).append(time.perf_counter() - start)
        result = []
        for i, step in enumerate(self.steps):
            nodes = step.nodes if isinstance(step, Segment) else [step.node]
            result += [(node, float(np.median(times[i])) / len(nodes)) for node in nodes]
        return result

    def _check_guards(self, arena: np.ndarray) -> None:
        wrote = np.flatnonzero((arena != CANARY) & ~self._payload)
        if wrote.size:
            at = int(wrote[0])
            near = min((w for w in self.where.items() if w[1].kind == "arena"),
                       key=lambda item: abs(item[1].at - at), default=("?", None))[0]
            raise BackendError(f"a kernel wrote arena byte {at}, outside every buffer "
                               f"(nearest: %{near})")
        if not np.array_equal(self._constant_block, self._pristine):
            raise BackendError("a kernel wrote into the constants")

    def _run_segment(self, segment: Segment, arena: _Arena) -> None:
        if self._pool is None or segment.work < self.parallel_work:
            segment.fn(arena.address, self._constants_address, 0, 1)
            return
        others = [self._pool.submit(segment.fn, arena.address, self._constants_address, tid,
                                    self.threads) for tid in range(1, self.threads)]
        segment.fn(arena.address, self._constants_address, 0, self.threads)
        for other in others:
            other.result()

    def array(self, value: Value, arena: np.ndarray) -> np.ndarray:
        """The array ``value`` occupies in ``arena`` (a view), or its constant data."""
        if value.is_constant:
            return value.data
        at = self.where[value.name].at
        return np.ndarray(_shape(value), value.dtype.np, buffer=arena, offset=at)

    def _run_fallback(self, node: Node, arena: _Arena) -> None:
        inputs = [None if v is None else self.array(v, arena.bytes) for v in node.inputs]
        results = self._interpreter.run_node(node, inputs)
        for value, result in zip(node.outputs, results, strict=True):
            target = self.array(value, arena.bytes)
            if result.shape != target.shape or result.dtype != target.dtype:
                raise BackendError(f"{node.describe()}: its numpy kernel gave "
                                   f"{result.dtype}{list(result.shape)} for "
                                   f"%{value.name}: {value.type}")
            np.copyto(target, result)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


# Ops whose output is their input's bytes under another shape: no kernel, no copy.
ALIAS_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def node_work(node: Node) -> int:
    """About the operations a node costs: its output elements, times the multiply-adds per
    element of a convolution or a matrix product."""
    elements = sum(int(np.prod(_shape(v))) for v in node.outputs)
    if node.op == "IntConv":
        return elements * int(np.prod(node.inputs[1].shape[1:]))
    if node.op == "IntMatMul":
        return elements * int(node.inputs[0].shape[-1])
    return elements


def _is_alias(node: Node) -> bool:
    x = node.inputs[0] if node.inputs else None
    return (node.op in ALIAS_OPS and x is not None and not x.is_constant
            and len(node.outputs) == 1 and node.outputs[0].dtype == x.dtype)


def _no_calls(node: Node, context: Context) -> list[Call]:
    return []


class _Arena:
    """One run's memory: the arena's bytes, its address, and views of the graph's inputs and
    outputs in it (made once: a run copies the inputs in and the outputs out)."""

    def __init__(self, program: Program):
        self.bytes = aligned_empty(program.arena_bytes)
        self.address = self.bytes.ctypes.data
        self.inputs = [program.array(v, self.bytes) for v in program.graph.inputs]
        self.outputs = [program.array(v, self.bytes) for v in program.graph.outputs]


def _shape(value: Value) -> tuple[int, ...]:
    if not all(isinstance(d, int) for d in value.shape):
        raise BackendError(f"%{value.name} has the shape {list(value.shape)}; the LLVM backend "
                           f"compiles for concrete shapes")
    return tuple(value.shape)


def _nbytes(value: Value) -> int:
    return int(np.prod(_shape(value), dtype=np.int64)) * value.dtype.np.itemsize


# A barrier for ``threads`` threads over two i64 words (arrivals, generation) at ``%b``: the
# last thread to arrive resets the count and moves the generation on; the others spin (with
# the x86 pause hint) until it moves, then yield the core between looks when it has not moved
# after some 16k spins (more threads than free cores). One thread passes straight through.
_BARRIER = """
declare void @llvm.x86.sse2.pause()
declare i32 @sched_yield()

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
  %spins = phi i64 [ 0, %arrive ], [ %spins.next, %again ], [ %spins.next, %yield ]
  call void @llvm.x86.sse2.pause()
  %now = load atomic i64, ptr %gen.at acquire, align 8
  %same = icmp eq i64 %now, %gen
  br i1 %same, label %again, label %done

again:
  %spins.next = add i64 %spins, 1
  %patient = icmp ult i64 %spins, 16384
  br i1 %patient, label %wait, label %yield

yield:
  %ignored = call i32 @sched_yield()
  br label %wait

done:
  ret void
}
"""
