"""ONNX backend node conformance through import + executor (harness: bench/onnx_conformance.py).

The full run covers every node case of every op type dlsim defines (slow: ~10 s to collect
and run ~900 cases); a fast subset imports only the case modules of the indexing and
tensor-making ops.
"""

import importlib.util
import os
import sys

import pytest

_BENCH = os.path.join(os.path.dirname(__file__), "..", "bench", "onnx_conformance.py")
_spec = importlib.util.spec_from_file_location("onnx_conformance", _BENCH)
conf = importlib.util.module_from_spec(_spec)
sys.modules["onnx_conformance"] = conf
_spec.loader.exec_module(conf)

OWN_OPS = {"Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterND", "TopK",
           "OneHot", "Trilu", "Constant", "ConstantOfShape", "Range", "EyeLike", "Shape", "Size",
           "HannWindow", "HammingWindow", "BlackmanWindow", "ReverseSequence", "TensorScatter"}


MODULES = ["gather", "gatherelements", "gathernd", "scatterelements", "scatternd", "topk", "onehot",
           "trilu", "constant", "constantofshape", "rangeop", "eyelike", "shape", "size",
           "hannwindow", "hammingwindow", "blackmanwindow", "reversesequence", "tensorscatter"]


def test_own_ops_pass_all_cases():
    results = conf.run_all(OWN_OPS, MODULES)
    mine = [r for r in results if r.op in OWN_OPS]
    fails = [f"{r.name}: {r.reason}" for r in mine if r.status == "fail"]
    assert not fails, fails
    ran = {r.op for r in mine if r.status == "pass"}
    assert ran == OWN_OPS
    assert sum(r.status == "pass" for r in mine) >= 80


@pytest.mark.slow
def test_conformance_thresholds():
    s = conf.summarize(conf.run_all())
    assert len(s["ops_covered"]) >= 100, s["ops_covered"]
    failures = [f"{r.name} [{r.op}]" for r in s["failures"]]
    assert s["pass_rate"] >= 0.95, (s["pass_rate"], failures)


def test_exporter_model_cases_pass():
    """The onnx package's PyTorch-exported model cases (opsets 6-9 spellings) all pass."""
    results = conf.run_model_dirs(("pytorch-converted", "pytorch-operator"))
    fails = [f"{r.name}: {r.reason}" for r in results if r.status == "fail"]
    assert not fails, fails
    assert sum(r.status == "pass" for r in results) >= 110
