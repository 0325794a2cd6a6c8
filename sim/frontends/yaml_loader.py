"""YAML workloads -> Graph.

A workload file has ``name``, optional ``version``/``description``/``dtype``, ``params``
(symbolic sizes, see ``sim.frontends.expr``), ``inputs`` (``name: {shape, dtype}``), optional
``weights`` (explicit parameters for raw ops), ``graph`` (a list of entries), ``outputs`` and
``blocks`` (named sub-graphs). An entry is one of

* ``{op: MatMul, in: [a, b], out: c, <attributes>}``: one library op (ONNX names/attributes);
* ``{layer: linear, name: fc1, in: x, out: y, <arguments>}``: a layer from
  ``sim.frontends.layers`` that expands into ops and named parameters;
* ``{block: decoder, name: h, repeat: n, as: i, <arguments>}``: a block instance (repeated,
  chained output to input, named ``h.0``, ``h.1`` ...).

``in`` defaults to the previous entry's output, ``out`` to the entry's name; ``if: <expr>``
skips an entry when it evaluates to 0. Entries may be listed in any order that has no cycle.
Every error is a one-line ``GraphError`` naming the file, line, entry and problem.

>>> g = load_yaml_text('''
... name: gemm
... params: {M: 4, N: 6, K: 8}
... inputs: {a: {shape: [M, K]}, b: {shape: [K, N]}}
... graph: [{op: MatMul, in: [a, b], out: c}]
... outputs: [c]
... ''', M=2)
>>> g.tensors["c"].shape
(2, 6)
"""

from __future__ import annotations

import difflib
import heapq
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sim.dtypes import canonical
from sim.errors import GraphError
from sim.frontends import expr
from sim.frontends.layers import LAYERS, Args, LayerContext
from sim.frontends.onnx_schema import check_node
from sim.graph import Graph, ParamInfo, TensorSpec
from sim.graph.rewrite import GraphBuilder
from sim.io import compose, read_text, safe_load
from sim.limits import check, limit

TOP_KEYS = ("name", "version", "description", "source", "dtype", "params", "inputs", "weights",
            "graph", "outputs", "blocks")
BLOCK_KEYS = ("params", "inputs", "graph", "outputs", "description")
ENTRY_KEYS = ("op", "layer", "block", "name", "in", "out", "if")
REPEAT_KEYS = ("repeat", "as", "start")
INITS = ("normal", "uniform", "zeros", "ones", "he", "xavier", "lstm", "constant")
BLOCK_ENTRY_KEYS = (*REPEAT_KEYS, "args")

Path_ = tuple[Any, ...]


def workloads_dir() -> Path:
    """The bundled ``workloads/`` folder (next to the ``sim`` package)."""
    return Path(__file__).resolve().parents[2] / "workloads"


def list_workloads() -> list[str]:
    """Names of the bundled workloads."""
    d = workloads_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def resolve_workload(name: str) -> str:
    """A bare workload name (``resnet50``) -> the path of ``workloads/resnet50.yaml``.

    Looks in ``./workloads`` first, then in the bundled folder. ``GraphError`` if neither has it.
    """
    stem = os.fspath(name)
    if os.path.splitext(stem)[1] or os.sep in stem or "/" in stem:
        raise GraphError("file not found", where=stem)
    for d in (Path.cwd() / "workloads", workloads_dir()):
        for ext in (".yaml", ".yml"):
            p = d / f"{stem}{ext}"
            if p.is_file():
                return str(p)
    known = list_workloads()
    close = difflib.get_close_matches(stem, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise GraphError(f"no such file or bundled workload{hint}; bundled: {', '.join(known)}",
                     where=stem)


# ---------------------------------------------------------------------- parsing
def _yaml_error(err: yaml.YAMLError, source: str) -> GraphError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    col = f" (column {mark.column + 1})" if mark is not None else ""
    cmark = getattr(err, "context_mark", None)
    if context and cmark is not None and mark is not None and cmark.line != mark.line:
        context = f"{context} (from line {cmark.line + 1})"
    text = f"{context}, {problem}" if context else problem
    return GraphError(f"invalid YAML: {text}{col}", where=where)


def _line_table(text: str) -> dict[Path_, int]:
    """1-based line of every mapping value and sequence item, by its key path."""
    table: dict[Path_, int] = {}
    try:
        root = compose(text)
    except yaml.YAMLError:
        return table

    def walk(node: Any, path: Path_, depth: int) -> None:
        table[path] = node.start_mark.line + 1
        if depth > 6:
            return
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                walk(v, (*path, getattr(k, "value", None)), depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i), depth + 1)

    if root is not None:
        walk(root, (), 0)
    return table


def _suggest(name: str, options: Any) -> str:
    opts = [str(o) for o in options]
    close = [o for o in opts if o.lower() == str(name).lower()]
    close = close or difflib.get_close_matches(str(name), opts, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return list(v) if isinstance(v, list | tuple) else [v]


# ---------------------------------------------------------------------- params
def resolve_params(decl: Mapping[str, Any], overrides: Mapping[str, Any],
                   base: Mapping[str, Any] | None = None, what: str = "param") -> dict[str, Any]:
    """Evaluate declared params (expressions may use each other, in any order) after applying
    ``overrides``; an override naming no declared param is an error.

    >>> resolve_params({"d": 64, "ff": "4*d"}, {"d": 8})
    {'d': 8, 'ff': 32}
    """
    for k in overrides:
        if k not in decl:
            raise GraphError(f"override {k!r} names no {what}{_suggest(k, decl)}; "
                             f"{what}s: {', '.join(map(str, decl)) or 'none'}")
    raw = {**decl, **overrides}
    outer = dict(base or {})
    done: dict[str, Any] = {}
    stack: list[str] = []

    def get(name: str) -> Any:
        if name in done:
            return done[name]
        if name in stack:
            raise GraphError(f"params refer to each other in a cycle: {' -> '.join([*stack, name])}")
        v = raw[name]
        stack.append(name)
        try:
            if isinstance(v, str) and not expr.is_bare_name(v):
                try:
                    used = expr.names(v)
                except SyntaxError:
                    used = set()
                env = {**outer, **{n: get(n) for n in used if n in raw}}
                v = expr.resolve(v, env)
            elif isinstance(v, str) and v.strip() in raw:
                v = get(v.strip())
            elif isinstance(v, str) and v.strip() in outer:
                v = outer[v.strip()]
            elif isinstance(v, list):
                v = [get(x) if isinstance(x, str) and x in raw else expr.resolve(x, outer) for x in v]
            elif not (v is None or isinstance(v, bool | int | float | str)):
                raise GraphError(f"{what} {name!r} must be a number, a name or an expression, got {v!r}")
        except GraphError as err:
            if err.message.startswith(f"{what} "):
                raise
            raise GraphError(f"{what} {name!r}: {err.message}") from None
        finally:
            stack.pop()
        done[name] = v
        return v

    for name in raw:
        get(str(name))
    return {str(k): done[str(k)] for k in raw}


# ---------------------------------------------------------------------- scopes
@dataclass
class _Scope:
    """Names visible while expanding a list of entries (the top level, a block instance, or a
    residual branch). ``bound`` maps local tensor names to graph tensor names."""

    env: dict[str, Any]
    prefix: str
    path: Path_  # key path of the entry list in the YAML document (for line numbers)
    label: str   # how errors name the list: "graph", "blocks.decoder.graph"
    parent: _Scope | None = None
    bound: dict[str, str] = field(default_factory=dict)
    rename: dict[str, str] = field(default_factory=dict)  # local outputs given caller names
    inst: str = ""  # the block instance being expanded, for errors: " in 'h.3'"

    def entry(self, i: int) -> str:
        return f"{self.label}[{i}]{self.inst}"


class _Loader:
    def __init__(self, doc: dict[str, Any], source: str, lines: dict[Path_, int]) -> None:
        self.doc = doc
        self.source = source
        self.lines = lines
        self.blocks: dict[str, Any] = doc.get("blocks") or {}
        self.graph = Graph(str(doc.get("name") or Path(source).stem), source=source)
        self.b = GraphBuilder(self.graph)
        self.dtype = "fp32"
        self.expanding: list[str] = []  # blocks being expanded, outermost first
        self.max_nodes = limit("graph_nodes")

    # ------------------------------------------------------------- errors
    def where(self, path: Path_, label: str, desc: str = "") -> str:
        line = self.lines.get(path)
        loc = f"{self.source}:{line}" if line else self.source
        return f"{loc}: {label}{f' ({desc})' if desc else ''}"

    def wrap(self, err: Exception, where: str, inner_node: bool = True) -> GraphError:
        """Re-raise ``err`` located at an entry; ``inner_node`` keeps the node it names."""
        if getattr(err, "_located", False):
            return err  # type: ignore[return-value]
        if isinstance(err, GraphError):
            inner = err.where or ""
            if inner.startswith(f"{self.source}: "):
                inner = inner[len(self.source) + 2:]
            if not inner_node and inner.startswith("node "):
                inner = ""
            msg = f"{inner}: {err.message}" if inner and inner != self.source else err.message
            new = type(err)(msg, where=where)
        else:
            new = GraphError(f"{type(err).__name__}: {err}", where=where)
        new._located = True  # type: ignore[attr-defined]
        return new

    def check_size(self) -> None:
        """Stop a workload whose graph grows past the ``graph_nodes`` limit (checked as it grows)."""
        if len(self.graph.nodes) >= self.max_nodes:
            check("graph_nodes", len(self.graph.nodes) + 1, "ops in the graph", None, GraphError)

    # ------------------------------------------------------------- tensors
    def lookup(self, scope: _Scope, name: Any) -> str:
        if not isinstance(name, str) or not name:
            raise GraphError(f"tensor names must be non-empty strings, got {name!r}")
        s: _Scope | None = scope
        while s is not None:
            if name in s.bound:
                return s.bound[name]
            if s.prefix and f"{s.prefix}{name}" in self.graph.tensors:
                return f"{s.prefix}{name}"
            s = s.parent
        if name in self.graph.tensors:
            return name
        known: set[str] = set(self.graph.inputs)
        s = scope
        while s is not None:
            known |= set(s.bound)
            s = s.parent
        raise GraphError(f"tensor {name!r} is not defined{_suggest(name, sorted(known))}")

    def define(self, scope: _Scope, local: str) -> str:
        return scope.rename.get(local, f"{scope.prefix}{local}")

    # ------------------------------------------------------------- entries
    def entry_io(self, entry: dict[str, Any], i: int, scope: _Scope, prev: str | None
                 ) -> tuple[list[str], list[str], str]:
        """(local inputs, local outputs, name) of an entry, before expanding it."""
        kinds = [k for k in ("op", "layer", "block") if k in entry]
        if len(kinds) != 1:
            raise GraphError("an entry needs exactly one of op, layer, block"
                             + (f" (has {', '.join(kinds)})" if kinds else
                                f"{_suggest(next(iter(entry), ''), ['op', 'layer', 'block'])}"))
        kind = kinds[0]
        what = entry[kind]
        if not isinstance(what, str):
            raise GraphError(f"{kind} must be a name, got {what!r}")
        name = entry.get("name")
        if name is not None and not isinstance(name, str | int):
            raise GraphError(f"name must be a string, got {name!r}")
        if kind == "block" and name is None:
            name = what
        if name is None:
            name = f"{what.lower() if kind == 'op' else what}_{i}"
        name = str(name)
        if "in" in entry:
            ins = [("" if t is None else str(t)) for t in _as_list(entry["in"])]
        elif prev is not None:
            ins = [prev]
        else:
            raise GraphError("entry has no 'in' and there is no previous tensor to take")
        if "out" in entry:
            outs = [str(t) for t in _as_list(entry["out"])]
        elif kind == "block" and what in self.blocks:
            b_outs = _as_list((self.blocks[what] or {}).get("outputs"))
            outs = [name] if len(b_outs) <= 1 else [f"{name}.{o}" for o in b_outs]
        else:
            outs = [name]
        return ins, outs, name

    def expand_list(self, entries: Any, scope: _Scope, default_in: str | None) -> str | None:
        """Expand entries in dependency order; returns the last listed entry's first output."""
        if not isinstance(entries, list):
            raise GraphError(f"{scope.label} must be a list of entries",
                             where=self.where(scope.path, scope.label))
        infos = []
        prev = default_in
        for i, entry in enumerate(entries):
            where = self.where((*scope.path, i), scope.entry(i))
            try:
                if not isinstance(entry, dict):
                    raise GraphError(f"an entry must be a mapping, got {entry!r}")
                if "if" in entry:
                    cond = expr.resolve(entry["if"], scope.env, strict=True)
                    if not cond:
                        continue
                ins, outs, name = self.entry_io(entry, i, scope, prev)
            except GraphError as err:
                raise self.wrap(err, where) from None
            infos.append((i, entry, ins, outs, name))
            prev = outs[0] if outs else prev
        if not infos:
            return default_in
        order = self._order(infos, scope)
        for k in order:
            i, entry, ins, outs, name = infos[k]
            kind = next(t for t in ("op", "layer", "block") if t in entry)
            desc = f"{kind} {entry[kind]} {name!r}" if kind != "op" else f"op {entry['op']} -> {outs[0]}"
            where = self.where((*scope.path, i), scope.entry(i), desc)
            try:
                if kind == "op":
                    self.expand_op(entry, ins, outs, name, scope)
                elif kind == "layer":
                    self.expand_layer(entry, ins, outs, name, scope, (*scope.path, i))
                else:
                    self.expand_block(entry, ins, outs, name, scope)
            except (GraphError, ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as err:
                raise self.wrap(err, where, inner_node=kind != "op") from None
        last_outs = infos[-1][3]
        return self.lookup(scope, last_outs[0]) if last_outs else default_in

    def _order(self, infos: list[Any], scope: _Scope) -> list[int]:
        """Entry indices in a topological order of their tensor dependencies, listed order first;
        a cycle is an error naming the entries on it."""
        producer: dict[str, int] = {}
        for k, (i, _, _, outs, _) in enumerate(infos):
            for t in outs:
                if t in producer:
                    j = infos[producer[t]][0]
                    raise GraphError(f"tensor {t!r} is produced by entries {j} and {i}",
                                     where=self.where((*scope.path, i), scope.entry(i)))
                producer[t] = k
        deps = [{producer[t] for t in ins if t in producer and producer[t] != k}
                for k, (_, _, ins, _, _) in enumerate(infos)]
        if all(all(d < k for d in ds) for k, ds in enumerate(deps)):
            return list(range(len(infos)))
        users: dict[int, list[int]] = {}
        indeg = [len(ds) for ds in deps]
        for k, ds in enumerate(deps):
            for d in ds:
                users.setdefault(d, []).append(k)
        heap = [k for k, n in enumerate(indeg) if n == 0]
        heapq.heapify(heap)
        order: list[int] = []
        while heap:
            k = heapq.heappop(heap)
            order.append(k)
            for u in users.get(k, []):
                indeg[u] -= 1
                if indeg[u] == 0:
                    heapq.heappush(heap, u)
        if len(order) < len(infos):
            # walk back along unresolved dependencies until an entry repeats: that is a cycle
            left = {k for k in range(len(infos)) if indeg[k] > 0}
            k = min(left)
            seen: list[int] = []
            while k not in seen:
                seen.append(k)
                k = min(d for d in deps[k] if d in left)
            cyc = seen[seen.index(k):]
            names = " -> ".join(f"{scope.label}[{infos[c][0]}] ({infos[c][3][0]})" for c in cyc)
            first = infos[cyc[0]][0]
            raise GraphError(f"entries form a cycle: {names} -> {scope.label}[{infos[cyc[0]][0]}]",
                             where=self.where((*scope.path, first), scope.entry(first)))
        return order

    def expand_op(self, entry: dict[str, Any], ins: list[str], outs: list[str], name: str,
                  scope: _Scope) -> None:
        for k in REPEAT_KEYS:
            if k in entry:
                raise GraphError(f"{k!r} applies to layers and blocks, not to ops")
        attrs = {k: expr.resolve(v, scope.env) for k, v in entry.items() if k not in ENTRY_KEYS}
        check_node(str(entry["op"]), ins, attrs)
        g_ins = [self.lookup(scope, t) if t else "" for t in ins]
        g_outs = [self.define(scope, t) for t in outs]
        node = self.graph.unique_name(f"{scope.prefix}{name}") if "name" in entry else g_outs[0]
        if node in self.graph.nodes:
            node = self.graph.unique_name(node)
        meta = {"layer": scope.prefix[:-1]} if scope.prefix else {}
        self.check_size()
        self.b.node(entry["op"], g_ins, g_outs, attrs, name=node, meta=meta)
        for loc, glob in zip(outs, g_outs):
            scope.bound[loc] = glob

    def repeat_spec(self, entry: dict[str, Any], scope: _Scope) -> tuple[int, int, str | None, bool]:
        """(count, first index, loop variable, repeated?) of an entry's ``repeat``/``start``/``as``."""
        repeat = entry.get("repeat")
        n = 1 if repeat is None else expr.evaluate_int(expr.resolve(repeat, scope.env, True),
                                                       scope.env, "repeat")
        if n < 0:
            raise GraphError(f"repeat is {n}")
        check("repeat", n, "repeat", None, GraphError)
        start = expr.evaluate_int(expr.resolve(entry.get("start", 0), scope.env, True), scope.env,
                                  "start")
        var = entry.get("as")
        if var is not None and (not isinstance(var, str) or not var.isidentifier()):
            raise GraphError(f"'as' must name a loop variable, got {var!r}")
        return n, start, var, repeat is not None

    def expand_layer(self, entry: dict[str, Any], ins: list[str], outs: list[str], name: str,
                     scope: _Scope, path: Path_) -> None:
        kind = entry["layer"]
        fn = LAYERS.get(kind)
        if fn is None:
            raise GraphError(f"unknown layer {kind!r}{_suggest(kind, LAYERS)}; layers: "
                             f"{', '.join(sorted(LAYERS))}")
        if len(outs) != 1:
            raise GraphError(f"a layer has one output, {len(outs)} named")
        raw = {k: v for k, v in entry.items() if k not in ENTRY_KEYS and k not in REPEAT_KEYS}
        n, start, var, repeated = self.repeat_spec(entry, scope)
        if repeated and len(ins) != 1:
            raise GraphError(f"a repeated layer takes one input, {len(ins)} given")
        cur = [self.lookup(scope, t) for t in ins]
        for k in range(n):
            self.check_size()
            env = {**scope.env, var: start + k} if var else scope.env
            full = f"{scope.prefix}{name}.{start + k}" if repeated else f"{scope.prefix}{name}"
            args = Args(raw, env, kind)

            def expand(entries: list[Any], x: str, prefix: str, what: str,
                       env: dict[str, Any] = env) -> str:
                sub = _Scope(env, prefix, (*path, what), f"{scope.label}[{path[-1]}].{what}",
                             parent=scope, inst=scope.inst)
                sub.bound[x] = x
                out = self.expand_list(entries, sub, x)
                return x if out is None else out

            ctx = LayerContext(self.graph, full, kind, args, dtype=self.dtype,
                               expand=expand, lookup=lambda t: self.lookup(scope, t))
            out = self.define(scope, outs[0]) if k == n - 1 else full
            cur = [fn(ctx, cur, out)]
            args.check_unused(REPEAT_KEYS)
        scope.bound[outs[0]] = cur[0]

    def expand_block(self, entry: dict[str, Any], ins: list[str], outs: list[str], name: str,
                     scope: _Scope) -> None:
        bname = entry["block"]
        if bname in self.expanding:
            raise GraphError(f"block {bname!r} contains itself: {' -> '.join([*self.expanding, bname])}")
        if bname not in self.blocks:
            raise GraphError(f"unknown block {bname!r}{_suggest(bname, self.blocks)}; blocks: "
                             f"{', '.join(self.blocks) or 'none'}")
        block = self.blocks[bname] or {}
        if not isinstance(block, dict):
            raise GraphError(f"block {bname!r} must be a mapping")
        for k in block:
            if k not in BLOCK_KEYS:
                raise GraphError(f"block {bname!r} has unknown key {k!r}{_suggest(k, BLOCK_KEYS)}")
        b_ins = [str(t) for t in _as_list(block.get("inputs"))]
        b_outs = [str(t) for t in _as_list(block.get("outputs"))]
        if not b_ins or not b_outs:
            raise GraphError(f"block {bname!r} needs 'inputs' and 'outputs'")
        if len(ins) != len(b_ins):
            raise GraphError(f"block {bname!r} takes {len(b_ins)} inputs, {len(ins)} given")
        if len(outs) != len(b_outs):
            raise GraphError(f"block {bname!r} gives {len(b_outs)} outputs, {len(outs)} named")
        args_raw = dict(entry.get("args") or {})
        args_raw.update({k: v for k, v in entry.items()
                         if k not in ENTRY_KEYS and k not in BLOCK_ENTRY_KEYS})
        n, start, var, repeated = self.repeat_spec(entry, scope)
        if repeated and len(b_ins) != len(b_outs):
            raise GraphError(f"block {bname!r} is repeated, so its outputs must match its inputs "
                             f"({len(b_outs)} outputs, {len(b_ins)} inputs)")
        cur = [self.lookup(scope, t) for t in ins]
        decl = dict(block.get("params") or {})
        for k in range(n):
            self.check_size()
            idx = start + k
            inst = f"{scope.prefix}{name}.{idx}" if repeated else f"{scope.prefix}{name}"
            env_call = {**scope.env, **({var: idx} if var else {})}
            given = {a: expr.resolve(v, env_call) for a, v in args_raw.items()}
            env = resolve_params(decl, given, base=env_call, what=f"argument of block {bname!r}")
            sub = _Scope({**env_call, **env}, f"{inst}.", ("blocks", bname, "graph"),
                         f"blocks.{bname}.graph", inst=f" in {inst!r}")
            for loc, glob in zip(b_ins, cur):
                sub.bound[loc] = glob
            if k == n - 1:
                sub.rename = {loc: self.define(scope, o) for loc, o in zip(b_outs, outs)}
            self.expanding.append(bname)
            try:
                self.expand_list(block.get("graph"), sub, b_ins[0])
            finally:
                self.expanding.pop()
            try:
                cur = [self.lookup(sub, t) for t in b_outs]
            except GraphError as err:
                raise GraphError(f"block {bname!r}: output {err.message}") from None
        for loc, glob in zip(outs, cur):
            scope.bound[loc] = glob

    # ------------------------------------------------------------- top level
    def build(self, overrides: Mapping[str, Any]) -> Graph:
        doc, src = self.doc, self.source
        for k in doc:
            if k not in TOP_KEYS:
                raise GraphError(f"unknown top-level key {k!r}{_suggest(k, TOP_KEYS)}",
                                 where=self.where((k,), "top level"))
        params_decl = doc.get("params") or {}
        if not isinstance(params_decl, dict):
            raise GraphError("'params' must be a mapping of name: value", where=src)
        try:
            env = resolve_params(params_decl, overrides)
        except GraphError as err:
            key = next((k for k in overrides if k not in params_decl), None)
            raise GraphError(err.message, where=self.where(("params",), "params") if key is None
                             else src) from None
        g = self.graph
        g.meta.update({"workload": g.name, "version": doc.get("version"), "params": dict(env)})
        top = _Scope(env, "", ("graph",), "graph")
        try:
            self.dtype = canonical(str(expr.resolve(doc.get("dtype", "fp32"), env)))
        except GraphError as err:
            raise self.wrap(err, self.where(("dtype",), "dtype")) from None
        inputs = doc.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise GraphError("'inputs' must be a mapping of name: {shape, dtype}", where=src)
        for name, decl in inputs.items():
            self._tensor_decl(str(name), decl, env, ("inputs", name), "input", top)
        weights = doc.get("weights") or {}
        if not isinstance(weights, dict):
            raise GraphError("'weights' must be a mapping of name: {shape, dtype, init}", where=src)
        for name, decl in weights.items():
            self._tensor_decl(str(name), decl, env, ("weights", name), "weight", top)
        if "graph" not in doc:
            raise GraphError("workload has no 'graph'", where=src)
        first = next(iter(inputs), None)
        last = self.expand_list(doc["graph"], top, None if first is None else str(first))
        outputs = doc.get("outputs")
        try:
            if outputs is None:
                outs = [last] if last is not None else []
            else:
                outs = [self.lookup(top, str(t)) for t in _as_list(outputs)]
            g.set_outputs(outs)
        except GraphError as err:
            raise GraphError(err.message, where=self.where(("outputs",), "outputs")) from None
        return g.verify()

    def _tensor_decl(self, name: str, decl: Any, env: dict[str, Any], path: Path_, what: str,
                     scope: _Scope) -> None:
        where = self.where(path, f"{what} {name!r}")
        try:
            if not isinstance(decl, dict) or "shape" not in decl:
                raise GraphError(f"{what} needs a mapping with 'shape'")
            allowed = ("shape", "dtype") if what == "input" else \
                ("shape", "dtype", "init", "trainable", "std", "scale", "value")
            for k in decl:
                if k not in allowed:
                    raise GraphError(f"unknown key {k!r}{_suggest(k, allowed)}")
            shape = [expr.evaluate_int(expr.resolve(d, env, strict=True), env, "dimension")
                     for d in _as_list(decl["shape"])]
            if any(d <= 0 for d in shape):
                raise GraphError(f"shape {shape} has a dimension <= 0")
            dtype = canonical(str(expr.resolve(decl.get("dtype", self.dtype), env)))
            spec = TensorSpec(tuple(shape), dtype)
            if what == "input":
                self.b.input(name, spec)
            else:
                init = str(decl.get("init", "normal"))
                if init not in INITS:
                    raise GraphError(f"unknown init {init!r}{_suggest(init, INITS)}; inits: "
                                     f"{', '.join(INITS)}")
                opts = {k: expr.resolve(decl[k], env, True) for k in ("std", "scale", "value")
                        if k in decl}
                self.b.param(name, spec, ParamInfo(init, bool(decl.get("trainable", True)), opts))
            scope.bound[name] = name
        except GraphError as err:
            raise self.wrap(err, where) from None


def _resolve_attention(doc: dict[str, Any], overrides: dict[str, Any],
                       target_attention: str | None) -> dict[str, Any]:
    """``overrides`` with a declared ``attention: auto`` resolved for the GPU that will run it:
    one whose ``arch.attention_kernel`` is ``materialized`` (scores written out, then a softmax
    kernel: PyTorch's math path, Megatron-LM before flash attention) gets the unfused core, unless
    the step reads a KV cache (decode kernels are fused). Anything else leaves ``auto`` (fused)."""
    declared = doc.get("params")
    if target_attention != "materialized" or "attention" in overrides or not isinstance(declared, dict):
        return overrides
    if declared.get("attention") != "auto" or overrides.get("kv_cache", declared.get("kv_cache", 0)) != 0:
        return overrides
    return {**overrides, "attention": "unfused"}


def load_yaml_text(text: str, source: str = "<string>", *, target_attention: str | None = None,
                   **overrides: Any) -> Graph:
    """Build a graph from workload YAML text (``source`` names it in errors). ``target_attention``
    is the attention kernel of the GPU it is built for (``_resolve_attention``)."""
    try:
        doc = safe_load(text)
    except yaml.YAMLError as err:
        raise _yaml_error(err, source) from None
    if not isinstance(doc, dict):
        raise GraphError("a workload must be a YAML mapping (name, params, inputs, graph, ...)",
                         where=source)
    overrides = _resolve_attention(doc, overrides, target_attention)
    return _Loader(doc, source, _line_table(text)).build(overrides)


def load_yaml(path: str | os.PathLike[str], *, target_attention: str | None = None,
              **overrides: Any) -> Graph:
    """Load a workload file; keyword arguments override its ``params`` (``batch=32``).

    >>> g = load_yaml(workloads_dir() / "gemm.yaml", M=64)
    >>> g.tensors["c"].shape
    (64, 768)
    """
    p = os.fspath(path)
    return load_yaml_text(read_text(p, error=GraphError), p, target_attention=target_attention, **overrides)
