"""Passes, the pass registry, pipeline strings and the ``PassManager`` that runs them.

A pass is a small dataclass whose fields are its options, with a registered ``name`` and a
``run(graph) -> PassResult`` method::

    @register_pass
    @dataclass
    class StripNeutral(Pass):
        name = "strip-neutral"
        ops: tuple[str, ...] = ("Add", "Mul")

        def run(self, graph: Graph) -> PassResult:
            ...

A pipeline string names passes with their options in braces, MLIR style: options are separated
by spaces, list values by commas (``"canonicalize,fold-bn,fuse{activations=relu,clip}"``).
The ``PassManager`` works on a copy of the graph it is given, verifies the IR after every pass,
can repeat the pipeline to a fixpoint, records timing and change counts per pass, and can print
the IR after every pass or after named ones. Any failure is a ``PassError`` naming the pass, the
node it was working on (the user's layer) and the passes that had already run.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import time
import types
import typing
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TextIO

from .errors import PassError, PipelineError, QCompilerError, VerificationError
from .graph import Graph


@dataclass
class PassResult:
    """What a pass returns: the graph (usually the one it was given, edited in place), whether
    it changed, and named change counts (``{"conv-bn": 3}``) for reports and tests."""

    graph: Graph
    changed: bool
    stats: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Pass:
    """Base class of passes. Subclasses are dataclasses (their fields are the options) with a
    class attribute ``name`` and a ``run`` method; ``@register_pass`` makes them available to
    pipeline strings."""

    name: ClassVar[str] = ""

    def run(self, graph: Graph) -> PassResult:
        raise NotImplementedError(f"pass {self.name!r} does not implement run()")

    def explain(self, graph: Graph) -> list[str]:
        """Why candidates in ``graph`` were left alone; passes without rules have nothing to say."""
        return []

    @classmethod
    def option_types(cls) -> dict[str, Any]:
        """Option name -> annotated type, for parsing pipeline strings."""
        if not dataclasses.is_dataclass(cls):
            return {}
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}

    def __str__(self) -> str:
        """The pipeline spelling of this pass with its non-default options."""
        if not dataclasses.is_dataclass(self):
            return self.name
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = (f.default if f.default is not dataclasses.MISSING
                       else f.default_factory() if f.default_factory is not dataclasses.MISSING
                       else dataclasses.MISSING)
            if value != default:
                parts.append(f"{f.name}={_format_option(value)}")
        return f"{self.name}{{{' '.join(parts)}}}" if parts else self.name


PASSES: dict[str, type[Pass]] = {}

P = typing.TypeVar("P", bound=type[Pass])


def register_pass(cls: P) -> P:
    """Class decorator: make a ``Pass`` subclass available by its ``name`` in pipelines."""
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise TypeError(f"register_pass expects a Pass subclass, got {cls!r}")
    name = cls.name
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"pass name {name!r} must be non-empty letters, digits, '-' or '_'")
    old = PASSES.get(name)
    redefined = old is not None and (old.__module__, old.__qualname__) == (
        cls.__module__, cls.__qualname__)  # the same class defined again (a re-run cell)
    if old is not None and old is not cls and not redefined:
        raise ValueError(f"a pass named {name!r} is already registered ({old!r})")
    PASSES[name] = cls
    return cls


def available_passes() -> list[str]:
    _load_builtin_passes()
    return sorted(PASSES)


def get_pass(name: str, **options: Any) -> Pass:
    """An instance of the registered pass ``name`` with ``options``."""
    _load_builtin_passes()
    cls = PASSES.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, PASSES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PipelineError(f"unknown pass {name!r}{hint} (registered: "
                            f"{', '.join(sorted(PASSES))})")
    known = cls.option_types()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise PipelineError(f"pass {name!r} has no option(s) {', '.join(unknown)} "
                            f"(options: {', '.join(known) or 'none'})")
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"pass {name!r}: {exc}") from exc


def _load_builtin_passes() -> None:
    import qcompiler.passes  # noqa: F401  (registers the built-in passes)


# -- pipeline strings ---------------------------------------------------------------------------


def parse_pipeline(text: str) -> list[Pass]:
    """``"a,b{opt=1 list=x,y},c"`` -> pass instances, with option values converted to the
    types the pass declares."""
    passes = []
    for item in _split_items(text):
        name, _, rest = item.partition("{")
        name = name.strip()
        if not name:
            raise PipelineError(f"empty pass name in pipeline {text!r}")
        options: dict[str, Any] = {}
        if rest:
            if not rest.endswith("}"):
                raise PipelineError(f"pass {name!r}: options must end with '}}' in {item!r}")
            _load_builtin_passes()
            types = PASSES[name].option_types() if name in PASSES else {}
            for key, raw in _split_options(rest[:-1], name):
                if key in options:
                    raise PipelineError(f"pass {name!r}: option {key!r} is given twice")
                options[key] = _convert(name, key, raw, types.get(key, str))
        passes.append(get_pass(name, **options))
    return passes


def _split_items(text: str) -> list[str]:
    """Split at top-level commas (commas inside braces separate list values)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
            if depth > 1:
                raise PipelineError(f"nested '{{' at column {i + 1} of pipeline {text!r}")
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise PipelineError(f"unmatched '}}' at column {i + 1} of pipeline {text!r}")
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise PipelineError(f"unclosed '{{' in pipeline {text!r}")
    items.append(text[start:])
    items = [item.strip() for item in items]
    if any(not item for item in items):
        raise PipelineError(f"empty pass name in pipeline {text!r}")
    return items


def _split_options(text: str, pass_name: str) -> list[tuple[str, str]]:
    out = []
    for token in text.split():
        key, eq, value = token.partition("=")
        if not eq or not key:
            raise PipelineError(f"pass {pass_name!r}: option {token!r} must be key=value "
                                "(options are separated by spaces, list values by commas)")
        out.append((key, value))
    return out


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _convert(pass_name: str, key: str, raw: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):  # ``int | None``: None, else the first fit
        options = typing.get_args(annotation)
        if type(None) in options and raw.lower() == "none":
            return None
        for option in options:
            if option is not type(None):
                try:
                    return _convert(pass_name, key, raw, option)
                except PipelineError:
                    continue
        raise PipelineError(f"pass {pass_name!r}: option {key}={raw!r}: expected "
                            f"{' or '.join(getattr(o, '__name__', str(o)) for o in options)}")
    try:
        if annotation is bool:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError("expected true or false")
        if annotation in (int, float, str):
            return annotation(raw)
        if origin in (tuple, list, frozenset, set):
            (item_type, *_) = typing.get_args(annotation) or (str,)
            items = [_convert(pass_name, key, part, item_type)
                     for part in raw.split(",") if part]
            return origin(items)
    except ValueError as exc:
        raise PipelineError(f"pass {pass_name!r}: option {key}={raw!r}: {exc}") from None
    return raw


def _format_option(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list, frozenset, set)):
        return ",".join(_format_option(v) for v in value)
    return str(value)


# -- running ------------------------------------------------------------------------------------


@dataclass
class PassRecord:
    """One pass execution: which pass, in which round, how long, what it changed."""

    name: str
    round: int
    seconds: float
    changed: bool
    nodes_before: int
    nodes_after: int
    stats: dict[str, int]
    notes: list[str]


PipelineSpec = str | Pass | Sequence[str | Pass]


class PassManager:
    """Runs a pipeline of passes over a copy of a graph.

    ``verify`` checks the IR after every pass; ``fixpoint`` repeats the whole pipeline until no
    pass changes the graph (at most ``max_rounds`` times); ``print_ir_after`` is ``"all"``, a
    pass name or a list of names, and the IR is written to ``stream`` after those passes;
    ``explain`` also records, per pass, why its rules left candidates alone.
    """

    def __init__(self, pipeline: PipelineSpec, *, verify: bool = True, fixpoint: bool = False,
                 max_rounds: int = 10, print_ir_after: str | Iterable[str] | None = None,
                 stream: TextIO | None = None, explain: bool = False):
        self.passes = _as_passes(pipeline)
        self.verify = verify
        self.fixpoint = fixpoint
        if max_rounds < 1:
            raise PipelineError(f"max_rounds must be at least 1, got {max_rounds}")
        self.max_rounds = max_rounds
        if isinstance(print_ir_after, str):
            print_ir_after = [print_ir_after]
        self.print_ir_after = set(print_ir_after or ())
        unknown = self.print_ir_after - {"all"} - {p.name for p in self.passes}
        if unknown:
            raise PipelineError(f"print_ir_after names {', '.join(sorted(unknown))}, which "
                                f"the pipeline {self.pipeline!r} does not run")
        self.stream = stream
        self.explain = explain
        self.records: list[PassRecord] = []
        self.explanations: dict[str, list[str]] = {}

    @property
    def pipeline(self) -> str:
        return ",".join(str(p) for p in self.passes)

    def run(self, graph: Graph) -> PassResult:
        """Run the pipeline on a copy of ``graph``; the caller's graph is never modified."""
        work = graph.copy()
        if self.verify:
            work.verify()  # a broken input is the caller's problem, not the first pass's
        self.records = []
        self.explanations = {}
        total: dict[str, int] = {}
        changed_any = False
        ran: list[str] = []
        rounds = self.max_rounds if self.fixpoint else 1
        for round_ in range(1, rounds + 1):
            changed_round = False
            for p in self.passes:
                result = self._run_one(p, work, round_, tuple(ran))
                ran.append(p.name)
                work = result.graph
                changed_round |= result.changed
                for key, count in result.stats.items():
                    total[f"{p.name}: {key}"] = total.get(f"{p.name}: {key}", 0) + count
            changed_any |= changed_round
            if not changed_round:
                break
        else:
            if self.fixpoint:
                warnings.warn(f"pipeline {self.pipeline!r} still changed the graph after "
                              f"{self.max_rounds} rounds; stopping there", stacklevel=2)
        return PassResult(work, changed_any, total)

    def _run_one(self, p: Pass, graph: Graph, round_: int, ran: tuple[str, ...]) -> PassResult:
        before = len(graph.nodes)
        signature = _signature(graph)
        start = time.perf_counter()
        try:
            result = p.run(graph)
        except QCompilerError as exc:  # a RewriteError knows the node it was rewriting
            raise PassError(f"pass {p.name!r} failed{_after(ran)}: {exc}", p.name,
                            getattr(exc, "node", None), ran) from exc
        except Exception as exc:
            raise PassError(f"pass {p.name!r} crashed{_after(ran)}: {type(exc).__name__}: {exc}",
                            p.name, passes_run=ran) from exc
        seconds = time.perf_counter() - start
        if not isinstance(result, PassResult):
            raise PassError(f"pass {p.name!r} returned {type(result).__name__}, not a "
                            "PassResult", p.name, passes_run=ran)
        changed = _signature_change(signature, _signature(result.graph))
        if changed:
            raise PassError(f"pass {p.name!r} changed the graph's signature{_after(ran)}: "
                            f"{changed}", p.name, passes_run=ran)
        if self.verify:
            try:
                result.graph.verify()
            except VerificationError as exc:
                raise PassError(f"pass {p.name!r} left an invalid graph{_after(ran)}: {exc}",
                                p.name, _first_node(result.graph, exc.problems), ran) from exc
        self.records.append(PassRecord(p.name, round_, seconds, result.changed, before,
                                       len(result.graph.nodes), dict(result.stats),
                                       list(result.notes)))
        if self.explain:
            self.explanations.setdefault(p.name, []).extend(result.notes)
        if "all" in self.print_ir_after or p.name in self.print_ir_after:
            stream = self.stream or sys.stdout
            stream.write(f"// ----- IR after {p} (round {round_}) -----\n{result.graph}\n")
        return result

    def report(self) -> str:
        """Per-pass timing and change counts of the last run, one line per pass execution."""
        lines = [f"{'pass':<24} {'round':>5} {'ms':>9} {'nodes':>11}  changes"]
        for r in self.records:
            changes = ", ".join(f"{k} x{v}" for k, v in r.stats.items()) or (
                "changed" if r.changed else "-")
            lines.append(f"{r.name:<24} {r.round:>5} {r.seconds * 1e3:>9.2f} "
                         f"{r.nodes_before:>5}->{r.nodes_after:<5}  {changes}")
        return "\n".join(lines)


def _as_passes(pipeline: PipelineSpec) -> list[Pass]:
    if isinstance(pipeline, Pass):
        return [pipeline]
    if isinstance(pipeline, str):
        return parse_pipeline(pipeline)
    passes: list[Pass] = []
    for item in pipeline:
        if isinstance(item, Pass):
            passes.append(item)
        elif isinstance(item, str):
            passes.extend(parse_pipeline(item))
        elif isinstance(item, type) and issubclass(item, Pass):
            passes.append(item())
        else:
            raise PipelineError(f"a pipeline item must be a pass name or a Pass, got {item!r}")
    if not passes:
        raise PipelineError("the pipeline is empty")
    return passes


Signature = tuple[list[tuple[str, str, tuple]], list[tuple[str, str, tuple]]]


def _signature(graph: Graph) -> Signature:
    """Names, dtypes and shapes of the graph's inputs and outputs."""
    return ([(v.name, v.dtype.value, v.shape) for v in graph.inputs],
            [(v.name, v.dtype.value, v.shape) for v in graph.outputs])


def _signature_change(before: Signature, after: Signature) -> str | None:
    """How a pass changed the graph's signature, or None. An output dimension that was unknown
    (``?``) may become known: that is inference learning more, not a change."""
    for kind, old, new in (("inputs", before[0], after[0]), ("outputs", before[1], after[1])):
        if [n for n, _, _ in old] != [n for n, _, _ in new]:
            return (f"its {kind} were {', '.join('%' + n for n, _, _ in old) or 'none'}, now "
                    f"{', '.join('%' + n for n, _, _ in new) or 'none'}")
        for (name, dtype, shape), (_, dtype2, shape2) in zip(old, new):
            refined = kind == "outputs" and len(shape) == len(shape2) and all(
                a == b or a == "?" for a, b in zip(shape, shape2))
            if dtype != dtype2 or (shape != shape2 and not refined):
                return (f"{kind[:-1]} %{name} was {dtype}[{','.join(map(str, shape))}], now "
                        f"{dtype2}[{','.join(map(str, shape2))}]")
    return None


def _after(ran: tuple[str, ...]) -> str:
    return f" (after {', '.join(ran)})" if ran else ""


def _first_node(graph: Graph, problems: Sequence[str]) -> str | None:
    """The first node a verification problem mentions, so the error can name the layer."""
    names = {n.name for n in graph.nodes}
    for problem in problems:
        for token in problem.replace('"', "'").split("'"):
            if token in names:
                return token
    return None

