"""ONNX backend node conformance: run the onnx package's node test cases through dlsim.

Every case in ``onnx.backend.test.case.node.collect_testcases()`` whose op types dlsim defines
is imported (``sim.frontends.onnx_import.import_model``) and executed with the NumPy
executor; outputs are compared with the case's expected outputs using the case's tolerances
(rtol 1e-3, atol 1e-7 unless the case says otherwise), as the ONNX backend runner does.

Harness rules:

* Graph inputs that feed a shape operand (Reshape's shape, TopK's K, Range's start ...) are
  bound as constants from the case's data set, since shape operands are attributes in dlsim.
* ``*_expanded`` cases (the function body of an op, spelled with other ops) are left out:
  they test the ops of the expansion, not the op they are named after.
* Training-mode Dropout cases with a non-zero ratio are out of scope: their expected mask
  comes from the reference implementation's random stream.
* Cases whose tensors use element types outside dlsim's dtype set (strings, uint16/32/64,
  complex, int4/uint4, float4, fnuz float8) or non-tensor types (sequences, optionals) are out
  of scope: counted and listed separately, not in the pass rate.

Usage: ``python bench/onnx_conformance.py [-v] [--ops Gather,TopK]``
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import GraphError, UnsupportedOpError
from sim.exec import execute
from sim.frontends.onnx_import import (
    EXPANSIONS,
    ONNX_DTYPES,
    RENAMED,
    SHAPE_OPERANDS,
    import_model,
)
from sim.ops.registry import has_op

# ONNX op types the importer maps onto a differently named op of ours.
MAPPED = {**RENAMED, "CastLike": "Cast", "Compress": "Gather"}
_SUPPORTED_ELEM = set(ONNX_DTYPES)


@dataclass
class CaseResult:
    name: str
    op: str
    status: str  # "pass", "fail", "out_of_scope"
    reason: str = ""


def _op_supported(op: str) -> bool:
    return has_op(MAPPED.get(op, op)) or op in EXPANSIONS


def _types_in_scope(model: Any) -> str:
    """'' if every tensor type of the model is one dlsim has, else the reason."""
    vis = list(model.graph.input) + list(model.graph.output)
    for vi in vis:
        if not vi.type.HasField("tensor_type"):
            return f"non-tensor type for {vi.name!r}"
        if vi.type.tensor_type.elem_type not in _SUPPORTED_ELEM:
            from onnx import TensorProto

            return f"element type {TensorProto.DataType.Name(vi.type.tensor_type.elem_type)}"
    for t in model.graph.initializer:
        if t.data_type not in _SUPPORTED_ELEM:
            return "initializer element type"
    for n in model.graph.node:
        for a in n.attribute:
            if a.type == 4 and a.t.data_type not in _SUPPORTED_ELEM:  # TENSOR attribute
                return "attribute tensor element type"
    return ""


def _bound_inputs(model: Any) -> set[str]:
    """Graph inputs that feed a shape operand (bound as constants by this harness)."""
    ins = {vi.name for vi in model.graph.input}
    out = set()
    for n in model.graph.node:
        operands = SHAPE_OPERANDS.get(n.op_type) or SHAPE_OPERANDS.get(MAPPED.get(n.op_type, ""), [])
        for j, _, _ in operands:
            if j < len(n.input) and n.input[j] in ins:
                out.add(n.input[j])
    return out


def _as_array(v: Any) -> np.ndarray:
    """A data-set value as an array (cases hold arrays, NumPy scalars or TensorProtos)."""
    if isinstance(v, (np.ndarray, np.generic)):
        return np.asarray(v)
    from onnx import TensorProto, numpy_helper

    if isinstance(v, TensorProto):
        return np.asarray(numpy_helper.to_array(v))
    raise TypeError(f"non-tensor value {type(v).__name__}")


def _random_case(model: Any, vals: dict[str, np.ndarray]) -> bool:
    """A Dropout in training mode with a non-zero ratio: its output is random."""
    for n in model.graph.node:
        if n.op_type != "Dropout" or len(n.input) < 3 or n.input[2] not in vals:
            continue
        ratio = float(vals[n.input[1]]) if len(n.input) > 1 and n.input[1] in vals else 0.5
        if bool(vals[n.input[2]]) and ratio > 0:
            return True
    return False


def run_case(case: Any) -> CaseResult:
    model = case.model
    op = model.graph.node[0].op_type if len(model.graph.node) == 1 else \
        "+".join(sorted({n.op_type for n in model.graph.node}))
    if len(model.graph.node) != 1:
        op = Counter(n.op_type for n in model.graph.node).most_common(1)[0][0]
    scope = _types_in_scope(model)
    if scope:
        return CaseResult(case.name, op, "out_of_scope", scope)
    rtol = case.rtol if case.rtol is not None else 1e-3
    atol = case.atol if case.atol is not None else 1e-7
    in_names = [vi.name for vi in model.graph.input]
    bound = _bound_inputs(model)
    for inputs, expected_raw in case.data_sets:
        try:
            vals = dict(zip(in_names, (_as_array(v) for v in inputs)))
            expected = [_as_array(v) for v in expected_raw]
        except TypeError as err:
            return CaseResult(case.name, op, "out_of_scope", str(err))
        if _random_case(model, vals):
            return CaseResult(case.name, op, "out_of_scope",
                              "training-mode Dropout: the mask comes from the reference's RNG")
        try:
            g = import_model(model, source=case.name, fold=False, weights_as_inputs=False,
                             input_values={k: v for k, v in vals.items() if k in bound})
            feeds = {k: v for k, v in vals.items() if k not in bound and k in g.inputs}
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                got = execute(g, feeds)
        except UnsupportedOpError as err:
            return CaseResult(case.name, op, "fail", f"unsupported: {err}")
        except GraphError as err:
            return CaseResult(case.name, op, "fail", str(err))
        except Exception as err:  # noqa: BLE001 - reported as a failure with its text
            return CaseResult(case.name, op, "fail", f"{type(err).__name__}: {err}")
        outs = [got[o] for o in g.outputs]
        if len(outs) != len(expected):
            return CaseResult(case.name, op, "fail", f"{len(outs)} outputs, {len(expected)} expected")
        for k, (a, e) in enumerate(zip(outs, expected)):
            e = np.asarray(e)
            if a.shape != e.shape:
                return CaseResult(case.name, op, "fail", f"output {k}: shape {a.shape} != {e.shape}")
            if e.dtype != a.dtype and not (e.dtype.kind == a.dtype.kind == "V"):
                return CaseResult(case.name, op, "fail", f"output {k}: dtype {a.dtype} != {e.dtype}")
            try:
                if e.dtype.kind in "fc" or e.dtype.kind == "V" or str(e.dtype) in ("bfloat16",):
                    np.testing.assert_allclose(a.astype(np.float64), e.astype(np.float64),
                                               rtol=rtol, atol=atol, equal_nan=True)
                else:
                    np.testing.assert_array_equal(a, e)
            except AssertionError:
                bad = ~np.isclose(a.astype(np.float64), e.astype(np.float64), rtol=rtol,
                                  atol=atol, equal_nan=True) if a.dtype.kind in "fcV" else a != e
                i = int(np.argmax(bad.reshape(-1))) if bad.size else 0
                return CaseResult(
                    case.name, op, "fail",
                    f"output {k}: {int(bad.sum())}/{bad.size} values differ "
                    f"(e.g. got {a.reshape(-1)[i]}, expected {e.reshape(-1)[i]})")
    return CaseResult(case.name, op, "pass")


def collect(ops: set[str] | None = None,
            modules: list[str] | None = None) -> tuple[list[Any], set[str]]:
    """(cases to run, ONNX op types seen): node cases whose op types all exist in dlsim.

    ``modules`` (names under ``onnx.backend.test.case.node``, e.g. ``["gather"]``) imports
    only those case modules: a quick subset instead of the whole suite.
    """
    import importlib

    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if modules is None:
            cases = node_cases.collect_testcases("")
        else:
            for mod in modules:
                importlib.import_module(f"onnx.backend.test.case.node.{mod}")
            cases = list(node_cases._NodeTestCases)
    seen: set[str] = set()
    keep = []
    for c in cases:
        if c.kind != "node" or c.name.endswith("_expanded") or "_expanded_" in c.name:
            continue
        types = {n.op_type for n in c.model.graph.node}
        seen |= types
        if ops is not None and not types & ops:
            continue
        if all(_op_supported(t) for t in types):
            keep.append(c)
    return keep, seen


def run_all(ops: set[str] | None = None, modules: list[str] | None = None) -> list[CaseResult]:
    cases, _ = collect(ops, modules)
    return [run_case(c) for c in cases]


MODEL_SUITES = ("pytorch-converted", "pytorch-operator", "simple")


def run_model_dirs(suites: tuple[str, ...] = MODEL_SUITES) -> list[CaseResult]:
    """The onnx package's exporter-made model cases (``data/<suite>/<case>/model.onnx`` with
    ``test_data_set_*``): imported from file and executed, rtol 1e-3 / atol 1e-7."""
    import glob
    import os

    import onnx
    from onnx import numpy_helper

    from sim.frontends.onnx_import import load_onnx

    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    results = []
    for suite in suites:
        for d in sorted(glob.glob(os.path.join(root, suite, "*"))):
            name = f"{suite}/{os.path.basename(d)}"
            path = os.path.join(d, "model.onnx")
            model = onnx.load(path)
            op = Counter(n.op_type for n in model.graph.node).most_common(1)[0][0]
            scope = _types_in_scope(model)
            if scope:
                results.append(CaseResult(name, op, "out_of_scope", scope))
                continue
            try:
                g = load_onnx(path, weights_as_inputs=False)
                inits = {t.name for t in model.graph.initializer}
                names = [vi.name for vi in model.graph.input if vi.name not in inits]
                status, reason = "pass", ""
                for ds in sorted(glob.glob(os.path.join(d, "test_data_set_*"))):
                    ins = [numpy_helper.to_array(onnx.load_tensor(p))
                           for p in sorted(glob.glob(os.path.join(ds, "input_*.pb")))]
                    outs = [numpy_helper.to_array(onnx.load_tensor(p))
                            for p in sorted(glob.glob(os.path.join(ds, "output_*.pb")))]
                    with warnings.catch_warnings(), np.errstate(all="ignore"):
                        warnings.simplefilter("ignore")
                        got = execute(g, dict(zip(names, ins)))
                    for o, e in zip(g.outputs, outs):
                        if not np.allclose(got[o].astype(np.float64), e.astype(np.float64),
                                           rtol=1e-3, atol=1e-7, equal_nan=True):
                            status, reason = "fail", f"output {o!r} differs"
            except GraphError as err:
                status, reason = "fail", str(err)
            results.append(CaseResult(name, op, status, reason))
    return results


def summarize(results: list[CaseResult]) -> dict[str, Any]:
    per_op: dict[str, Counter[str]] = defaultdict(Counter)
    for r in results:
        per_op[r.op][r.status] += 1
    scored = [r for r in results if r.status != "out_of_scope"]
    passed = sum(r.status == "pass" for r in scored)
    covered = sorted(op for op, c in per_op.items() if c["pass"] + c["fail"] > 0)
    return {
        "ops_covered": covered,
        "cases_run": len(scored),
        "cases_passed": passed,
        "pass_rate": passed / len(scored) if scored else 0.0,
        "out_of_scope": sum(r.status == "out_of_scope" for r in results),
        "per_op": per_op,
        "failures": [r for r in results if r.status == "fail"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", default="", help="comma-separated ONNX op types to run (default all)")
    ap.add_argument("-v", "--verbose", action="store_true", help="also list out-of-scope cases")
    args = ap.parse_args(argv)
    ops = {o.strip() for o in args.ops.split(",") if o.strip()} or None
    results = run_all(ops)
    s = summarize(results)
    _, seen = collect(ops)
    print(f"ONNX node conformance: {len(s['ops_covered'])} op types covered "
          f"(of {len(seen)} in the suite), {s['cases_run']} cases run, "
          f"{s['cases_passed']} passed ({100 * s['pass_rate']:.1f}%), "
          f"{s['out_of_scope']} out of scope")
    print(f"\n{'op':<28}{'cases':>6}{'pass':>6}{'rate':>8}")
    for op in sorted(s["per_op"]):
        c = s["per_op"][op]
        n = c["pass"] + c["fail"]
        rate = f"{100 * c['pass'] / n:.0f}%" if n else "-"
        extra = f"  (+{c['out_of_scope']} out of scope)" if c["out_of_scope"] else ""
        print(f"{op:<28}{n:>6}{c['pass']:>6}{rate:>8}{extra}")
    if s["failures"]:
        print("\nfailures:")
        for r in s["failures"]:
            print(f"  {r.name} [{r.op}]: {r.reason[:200]}")
    models = run_model_dirs()
    scored = [r for r in models if r.status != "out_of_scope"]
    print(f"\nexporter model cases ({', '.join(MODEL_SUITES)}): {len(scored)} run, "
          f"{sum(r.status == 'pass' for r in scored)} passed, "
          f"{len(models) - len(scored)} out of scope")
    for r in models:
        if r.status == "fail":
            print(f"  {r.name} [{r.op}]: {r.reason[:200]}")
    if args.verbose:
        print("\nout of scope:")
        for r in results:
            if r.status == "out_of_scope":
                print(f"  {r.name} [{r.op}]: {r.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
