"""Writes the bad-input corpus walked by tests/test_reliability_corpus.py (run it to regenerate).

Kinds (one folder each): ``hw/`` hardware YAML run as ``sim run {workload} --hw FILE``;
``workload/`` workload YAML run as ``sim run FILE``; ``onnx/`` malformed ONNX models run as
``sim run FILE``; ``cli/`` argument sets (``.args``: one line, shell-quoted, with
placeholders, optional ``# env: K=V`` lines); ``api/`` Python API calls (``.api``: one
expression or statement that must raise ``SimError``). Every case must be refused with exit 2
(or a SimError), one line, no traceback, and no change to any file.
"""

# ruff: noqa: E501  (a table of cases: one per line reads best)
from __future__ import annotations

import os
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent

GOOD_HW = """version: 1
name: tiny
kind: gpu
memory:
  - {name: hbm, capacity: 80 GB, bandwidth: 3 TB/s, efficiency: 0.9}
units:
  - name: tensor
    matrix: true
    peak: {bf16: 989 TFLOPS, fp32: 60 TFLOPS}
    efficiency: {bf16: 0.8}
  - name: vector
    peak: {fp32: 60 TFLOPS, bf16: 120 TFLOPS}
host_link: {name: pcie, bandwidth: 64 GB/s}
arch: {sms: 132, clock: 1.98 GHz}
"""

# (file name, text replacing a line/fragment of GOOD_HW or a whole document)
HW_SUBS = {
    "capacity_zero": ("capacity: 80 GB", "capacity: 0 GB"),
    "capacity_negative": ("capacity: 80 GB", "capacity: -80 GB"),
    "capacity_nan": ("capacity: 80 GB", "capacity: nan GB"),
    "capacity_inf": ("capacity: 80 GB", "capacity: inf GB"),
    "capacity_no_unit": ("capacity: 80 GB", "capacity: 80"),
    "capacity_bare_string": ("capacity: 80 GB", "capacity: '80'"),
    "capacity_wrong_kind": ("capacity: 80 GB", "capacity: 80 GB/s"),
    "capacity_overflow": ("capacity: 80 GB", "capacity: 1e400 GB"),
    "capacity_huge": ("capacity: 80 GB", "capacity: 1e300 EB"),
    "capacity_unknown_unit": ("capacity: 80 GB", "capacity: 80 XB"),
    "capacity_missing": ("capacity: 80 GB, ", ""),
    "capacity_list": ("capacity: 80 GB", "capacity: [80 GB]"),
    "bandwidth_zero": ("bandwidth: 3 TB/s", "bandwidth: 0 TB/s"),
    "bandwidth_negative": ("bandwidth: 3 TB/s", "bandwidth: -3 TB/s"),
    "bandwidth_nan": ("bandwidth: 3 TB/s", "bandwidth: .nan"),
    "bandwidth_wrong_kind": ("bandwidth: 3 TB/s", "bandwidth: 3 TB"),
    "bandwidth_tiny": ("bandwidth: 3 TB/s", "bandwidth: 1e-300 B/s"),
    "efficiency_zero": ("efficiency: 0.9}", "efficiency: 0}"),
    "efficiency_negative": ("efficiency: 0.9}", "efficiency: -0.5}"),
    "efficiency_over_one": ("efficiency: 0.9}", "efficiency: 1.5}"),
    "efficiency_nan": ("efficiency: 0.9}", "efficiency: .nan}"),
    "efficiency_inf": ("efficiency: 0.9}", "efficiency: .inf}"),
    "efficiency_text": ("efficiency: 0.9}", "efficiency: high}"),
    "efficiency_bool": ("efficiency: 0.9}", "efficiency: true}"),
    "unit_efficiency_zero": ("efficiency: {bf16: 0.8}", "efficiency: {bf16: 0}"),
    "unit_efficiency_over_one": ("efficiency: {bf16: 0.8}", "efficiency: {bf16: 1.01}"),
    "unit_efficiency_bad_dtype": ("efficiency: {bf16: 0.8}", "efficiency: {bf17: 0.8}"),
    "peak_zero": ("peak: {bf16: 989 TFLOPS", "peak: {bf16: 0 TFLOPS"),
    "peak_negative": ("peak: {bf16: 989 TFLOPS", "peak: {bf16: -989 TFLOPS"),
    "peak_nan": ("peak: {bf16: 989 TFLOPS", "peak: {bf16: nan TFLOPS"),
    "peak_tiny": ("peak: {bf16: 989 TFLOPS", "peak: {bf16: 1e-300 FLOPS"),
    "peak_wrong_kind": ("peak: {bf16: 989 TFLOPS", "peak: {bf16: 989 TB/s"),
    "peak_unknown_dtype": ("peak: {bf16: 989 TFLOPS", "peak: {bf17: 989 TFLOPS"),
    "peak_empty": ("peak: {bf16: 989 TFLOPS, fp32: 60 TFLOPS}", "peak: {}"),
    "peak_and_per_cycle": ("matrix: true", "matrix: true\n    per_cycle: {bf16: 1024}\n    per: sms"),
    "per_without_per_cycle": ("matrix: true", "matrix: true\n    per: sms"),
    "matrix_not_bool": ("matrix: true", "matrix: 'yes please'"),
    "clock_zero": ("clock: 1.98 GHz", "clock: 0 GHz"),
    "clock_negative": ("clock: 1.98 GHz", "clock: -1 GHz"),
    "clock_nan": ("clock: 1.98 GHz", "clock: nan GHz"),
    "clock_wrong_kind": ("clock: 1.98 GHz", "clock: 1.98 GB"),
    "sms_zero": ("sms: 132", "sms: 0"),
    "sms_fraction": ("sms: 132", "sms: 2.5"),
    "sms_negative": ("sms: 132", "sms: -1"),
    "sms_overflow": ("sms: 132", "sms: 1e400"),
    "sms_bool": ("sms: 132", "sms: true"),
    "sms_huge_int": ("sms: 132", "sms: " + "9" * 400),
    "arch_unknown_key": ("sms: 132", "sms: 132, smz: 3"),
    "arch_missing_clock": (", clock: 1.98 GHz", ""),
    "host_link_zero": ("bandwidth: 64 GB/s", "bandwidth: 0 GB/s"),
    "host_link_efficiency_zero": ("bandwidth: 64 GB/s}", "bandwidth: 64 GB/s, efficiency: 0}"),
    "launch_negative": ("kind: gpu", "kind: gpu\nlaunch: -5 us"),
    "latency_nan": ("efficiency: 0.9}", "efficiency: 0.9, latency: nan us}"),
    "unknown_top_key": ("kind: gpu", "kind: gpu\nspeed: fast"),
    "version_2": ("version: 1", "version: 2"),
    "version_missing": ("version: 1\n", ""),
    "kind_unknown": ("kind: gpu", "kind: quantum"),
    "memory_empty": ("memory:\n  - {name: hbm, capacity: 80 GB, bandwidth: 3 TB/s, efficiency: 0.9}",
                     "memory: []"),
    "memory_not_list": ("memory:\n  - {name: hbm, capacity: 80 GB, bandwidth: 3 TB/s, efficiency: 0.9}",
                        "memory: hbm"),
    "memory_names_repeat": ("  - {name: hbm, capacity: 80 GB, bandwidth: 3 TB/s, efficiency: 0.9}",
                            "  - {name: hbm, capacity: 80 GB, bandwidth: 3 TB/s, efficiency: 0.9}\n"
                            "  - {name: hbm, capacity: 8 GB, bandwidth: 9 TB/s}"),
    "units_names_repeat": ("  - name: vector", "  - name: tensor"),
    "units_empty": (None, GOOD_HW.split("units:")[0] + "units: []\narch: {sms: 132, clock: 1.98 GHz}\n"),
    "duplicate_key_top": ("kind: gpu", "kind: gpu\nkind: cpu"),
    "duplicate_key_flow": ("capacity: 80 GB", "capacity: 80 GB, capacity: 40 GB"),
    "duplicate_key_arch": ("sms: 132", "sms: 132, sms: 64"),
    "python_tag": ("name: tiny", "name: !!python/object/apply:os.system ['echo pwned']"),
    "python_name_tag": ("name: tiny", "name: !!python/name:os.system"),
    "binary_tag": ("name: tiny", "name: !!binary aGVsbG8="),
    "timestamp_name_field": ("sms: 132", "sms: 2020-01-01"),
    "tab_indent": ("units:\n  - name: tensor", "units:\n\t- name: tensor"),
    "unclosed_flow": ("arch: {sms: 132, clock: 1.98 GHz}", "arch: {sms: 132, clock: 1.98 GHz"),
    "anchor_undefined": ("sms: 132", "sms: *nothing"),
    "empty": (None, ""),
    "null_document": (None, "null\n"),
    "list_document": (None, "- version: 1\n- kind: gpu\n"),
    "scalar_document": (None, "h100\n"),
    "two_documents": (None, GOOD_HW + "---\n" + GOOD_HW),
    "alias_bomb": (None, "version: 1\nkind: gpu\n" + "\n".join(
        [f"a{0}: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]) + "\n"),
    "alias_recursive": (None, "version: 1\nkind: gpu\nmemory: &m [*m]\n"),
    "alias_recursive_mapping": (None, "version: 1\nkind: gpu\nx: &x {y: *x}\n"),
    "deep_nesting": (None, "version: 1\nkind: gpu\nmemory: " + "[" * 5000 + "]" * 5000 + "\n"),
    "deep_nesting_mapping": (None, "version: 1\nkind: gpu\narch: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n"),
}

SYSTEMS = {
    "system_self_reference": "version: 1\nkind: system\ndevices:\n  g: {spec: system_self_reference.yaml}\n",
    "system_count_huge": "version: 1\nkind: system\ndevices:\n  g: {spec: h100, count: 100000000}\n",
    "system_count_float": "version: 1\nkind: system\ndevices:\n  g: {spec: h100, count: 1e8}\n",
    "system_count_zero": "version: 1\nkind: system\ndevices:\n  g: {spec: h100, count: 0}\n",
    "system_count_fraction": "version: 1\nkind: system\ndevices:\n  g: {spec: h100, count: 2.5}\n",
    "system_unknown_spec": "version: 1\nkind: system\ndevices:\n  g: {spec: h1000, count: 2}\n",
    "system_topology_mismatch": ("version: 1\nkind: system\ndevices:\n  g: {spec: h100, count: 4}\n"
                                 "topology: {kind: ring, shape: [8]}\n"),
    "system_topology_kind": ("version: 1\nkind: system\ndevices:\n  g: {spec: h100, count: 4}\n"
                             "topology: {kind: hypercube, shape: [4]}\n"),
    "system_link_unknown_device": ("version: 1\nkind: system\ndevices:\n  g: {spec: h100, count: 2}\n"
                                   "links: [{a: g0, b: g7, link: {name: x, bandwidth: 1 GB/s}}]\n"),
    "system_host_link_without_host": ("version: 1\nkind: system\ndevices:\n  g: {spec: h100, count: 2}\n"
                                      "host_link: {name: pcie, bandwidth: 64 GB/s}\n"),
    "system_set_bad_value": ("version: 1\nkind: system\ndevices:\n"
                             "  g: {spec: h100, count: 2, set: {memory.hbm.bandwidth: 0 TB/s}}\n"),
    "system_set_unknown_field": ("version: 1\nkind: system\ndevices:\n"
                                 "  g: {spec: h100, count: 2, set: {memory.hbm.speed: 1}}\n"),
    "system_of_systems": "version: 1\nkind: system\ndevices:\n  g: {spec: dgx-h100, count: 2}\n",
    "system_devices_list": "version: 1\nkind: system\ndevices: [h100, h100]\n",
}

GOOD_WORKLOAD = """name: tiny
params: {batch: 2, d: 8}
inputs:
  x: {shape: [batch, d]}
graph:
  - {layer: linear, name: fc, in: x, out: h, out_features: d}
  - {op: Relu, in: h, out: y}
outputs: [y]
"""

WL_SUBS = {
    "dim_negative": ("shape: [batch, d]", "shape: [-1, d]"),
    "dim_zero": ("shape: [batch, d]", "shape: [0, d]"),
    "dim_fraction": ("shape: [batch, d]", "shape: [2.5, d]"),
    "dim_expr_fraction": ("shape: [batch, d]", "shape: [batch/4, d]"),
    "dim_huge": ("shape: [batch, d]", "shape: [2**62, d]"),
    "dim_overflow": ("shape: [batch, d]", "shape: [1e400, d]"),
    "elements_huge": ("shape: [batch, d]", "shape: [2**30, 2**30, 2**30]"),
    "rank_huge": ("shape: [batch, d]", "shape: [" + ", ".join(["1"] * 40) + "]"),
    "dim_string": ("shape: [batch, d]", "shape: [batch, wide]"),
    "dim_bool": ("shape: [batch, d]", "shape: [true, d]"),
    "dim_nan": ("shape: [batch, d]", "shape: [.nan, d]"),
    "param_nan": ("params: {batch: 2, d: 8}", "params: {batch: .nan, d: 8}"),
    "param_inf": ("params: {batch: 2, d: 8}", "params: {batch: .inf, d: 8}"),
    "param_timestamp": ("params: {batch: 2, d: 8}", "params: {batch: 2020-01-01, d: 8}"),
    "param_binary": ("params: {batch: 2, d: 8}", "params: {batch: !!binary aGVsbG8=, d: 8}"),
    "param_list": ("params: {batch: 2, d: 8}", "params: {batch: [1, 2], d: 8}"),
    "param_mapping": ("params: {batch: 2, d: 8}", "params: {batch: {x: 1}, d: 8}"),
    "param_cycle": ("params: {batch: 2, d: 8}", "params: {batch: d, d: batch}"),
    "param_self_cycle": ("params: {batch: 2, d: 8}", "params: {batch: batch + 1, d: 8}"),
    "param_pow_tower": ("params: {batch: 2, d: 8}", "params: {batch: '9**9**9**9', d: 8}"),
    "param_pow_nested": ("params: {batch: 2, d: 8}", "params: {batch: '(4096**4096)**4096', d: 8}"),
    "param_pow_chain": ("params: {batch: 2, d: 8}",
                        "params: {batch: '" + "*".join(["2**4000"] * 50) + "', d: 8}"),
    "param_div_zero": ("params: {batch: 2, d: 8}", "params: {batch: 2 // 0, d: 8}"),
    "param_mod_zero": ("params: {batch: 2, d: 8}", "params: {batch: 2 % (d - 8), d: 8}"),
    "param_float_overflow": ("params: {batch: 2, d: 8}", "params: {batch: '1e308 * 1e308', d: 8}"),
    "param_complex": ("params: {batch: 2, d: 8}", "params: {batch: '(-8) ** 0.5', d: 8}"),
    "param_long_expr": ("params: {batch: 2, d: 8}", "params: {batch: '" + "+".join(["1"] * 3000) + "', d: 8}"),
    "param_unary_chain": ("params: {batch: 2, d: 8}", "params: {batch: '" + "-" * 3000 + "2', d: 8}"),
    "param_call": ("params: {batch: 2, d: 8}", "params: {batch: '__import__(\"os\").getcwd()', d: 8}"),
    "param_attribute": ("params: {batch: 2, d: 8}", "params: {batch: 'd.real', d: 8}"),
    "param_lambda": ("params: {batch: 2, d: 8}", "params: {batch: '(lambda: 2)()', d: 8}"),
    "param_unknown_name": ("shape: [batch, d]", "shape: [batch, dd]"),
    "op_unknown": ("{op: Relu, in: h, out: y}", "{op: Rleu, in: h, out: y}"),
    "op_attribute_typo": ("{op: Relu, in: h, out: y}", "{op: Softmax, in: h, out: y, axs: 1}"),
    "op_attribute_unknown": ("{op: Relu, in: h, out: y}", "{op: Relu, in: h, out: y, alpha: 0.1}"),
    "op_extra_input": ("{op: Relu, in: h, out: y}", "{op: Relu, in: [h, h], out: y}"),
    "op_missing_input": ("{op: Relu, in: h, out: y}", "{op: Add, in: [h], out: y}"),
    "op_not_string": ("{op: Relu, in: h, out: y}", "{op: [Relu], in: h, out: y}"),
    "op_repeat": ("{op: Relu, in: h, out: y}", "{op: Relu, in: h, out: y, repeat: 3}"),
    "layer_unknown": ("layer: linear", "layer: lineer"),
    "layer_bad_argument": ("features: d}", "features: d, featurez: 3}"),
    "layer_features_negative": ("features: d}", "features: -4}"),
    "layer_features_fraction": ("features: d}", "features: 2.5}"),
    "layer_features_zero": ("features: d}", "features: 0}"),
    "repeat_huge": ("features: d}", "features: d, repeat: 100000000}"),
    "repeat_float_huge": ("features: d}", "features: d, repeat: 1e8}"),
    "repeat_negative": ("features: d}", "features: d, repeat: -1}"),
    "repeat_fraction": ("features: d}", "features: d, repeat: 2.5}"),
    "repeat_pow": ("features: d}", "features: d, repeat: '2**4096**2'}"),
    "repeat_string": ("features: d}", "features: d, repeat: many}"),
    "tensor_undefined": ("{op: Relu, in: h, out: y}", "{op: Relu, in: hh, out: y}"),
    "output_undefined": ("outputs: [y]", "outputs: [z]"),
    "entry_cycle": ("  - {op: Relu, in: h, out: y}", "  - {op: Relu, in: y, out: z}\n  - {op: Relu, in: z, out: y}"),
    "entry_twice_produced": ("  - {op: Relu, in: h, out: y}", "  - {op: Relu, in: h, out: y}\n  - {op: Relu, in: h, out: y}"),
    "entry_not_mapping": ("  - {op: Relu, in: h, out: y}", "  - Relu"),
    "entry_two_kinds": ("{op: Relu, in: h, out: y}", "{op: Relu, layer: linear, in: h, out: y}"),
    "graph_not_list": (None, "name: t\ninputs: {x: {shape: [2]}}\ngraph: {op: Relu}\n"),
    "graph_missing": (None, "name: t\ninputs: {x: {shape: [2]}}\n"),
    "inputs_list": ("inputs:\n  x: {shape: [batch, d]}", "inputs: [x]"),
    "input_no_shape": ("x: {shape: [batch, d]}", "x: {dtype: fp32}"),
    "input_dtype_unknown": ("x: {shape: [batch, d]}", "x: {shape: [batch, d], dtype: fp13}"),
    "dtype_unknown": ("name: tiny", "name: tiny\ndtype: fp13"),
    "unknown_top_key": ("name: tiny", "name: tiny\ngraf: []"),
    "duplicate_top_key": ("name: tiny", "name: tiny\nname: other"),
    "duplicate_param": ("params: {batch: 2, d: 8}", "params: {batch: 2, d: 8, batch: 4}"),
    "duplicate_entry_key": ("{op: Relu, in: h, out: y}", "{op: Relu, in: h, out: y, out: z}"),
    "weights_bad_init": ("inputs:", "weights:\n  w: {shape: [8, 8], init: magic}\ninputs:"),
    "weights_negative_dim": ("inputs:", "weights:\n  w: {shape: [-8, 8]}\ninputs:"),
    "block_unknown": ("  - {op: Relu, in: h, out: y}", "  - {block: nope, in: h, out: y}"),
    "block_recursive": (None, "name: t\ninputs: {x: {shape: [2, 4]}}\nblocks:\n  b:\n    inputs: [u]\n"
                              "    outputs: [v]\n    graph:\n      - {block: b, in: u, out: v}\n"
                              "graph:\n  - {block: b, in: x, out: y}\noutputs: [y]\n"),
    "block_mutual_recursion": (None, "name: t\ninputs: {x: {shape: [2, 4]}}\nblocks:\n  a:\n    inputs: [u]\n"
                                     "    outputs: [v]\n    graph: [{block: b, in: u, out: v}]\n  b:\n"
                                     "    inputs: [u]\n    outputs: [v]\n    graph: [{block: a, in: u, out: v}]\n"
                                     "graph:\n  - {block: a, in: x, out: y}\noutputs: [y]\n"),
    "block_repeat_huge": (None, "name: t\ninputs: {x: {shape: [2, 4]}}\nblocks:\n  b:\n    inputs: [u]\n"
                                "    outputs: [v]\n    graph: [{op: Relu, in: u, out: v}]\n"
                                "graph:\n  - {block: b, in: x, out: y, repeat: 10000000}\noutputs: [y]\n"),
    "if_bad_expr": ("{op: Relu, in: h, out: y}", "{op: Relu, in: h, out: y, if: 'batch >'}"),
    "python_tag": ("name: tiny", "name: !!python/object/apply:os.system ['echo pwned']"),
    "empty": (None, ""),
    "list_document": (None, "- name: t\n"),
    "scalar_document": (None, "gemm\n"),
    "unclosed_flow": ("params: {batch: 2, d: 8}", "params: {batch: 2, d: 8"),
    "tab_indent": ("graph:\n  - {layer", "graph:\n\t- {layer"),
    "alias_bomb": (None, "name: t\n" + "\n".join(
        ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)])
        + "\ngraph: *a8\n"),
    "alias_bomb_params": (None, "name: t\nparams:\n  l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
                          + "".join(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 9))
                          + "inputs: {x: {shape: [2]}}\ngraph: [{op: Relu, in: x, out: y}]\n"),
    "alias_recursive": (None, "name: t\ngraph: &g [*g]\n"),
    "alias_recursive_params": (None, "name: t\nparams: &p {a: *p}\ngraph: []\n"),
    "deep_nesting": (None, "name: t\ngraph: " + "[" * 5000 + "]" * 5000 + "\n"),
    "deep_nesting_params": (None, "name: t\nparams: {a: " + "{b: " * 2000 + "1" + "}" * 2001 + "\ngraph: []\n"),
    "huge_repeat_expr": ("features: d}", "features: d, repeat: 'batch * 10**9'}"),
}

BINARY_WORKLOADS = {
    "not_utf8.yaml": b"name: t\nparams: {batch: 2}\n# \xff\xfe broken bytes\n",
    "latin1.yaml": "name: caf\u00e9\ngraph: []\n".encode("latin-1"),
    "nul_bytes.yaml": b"name: t\x00\x00\ngraph: []\n",
    "random_bytes.yaml": bytes(range(256)) * 4,
}
BINARY_HW = {
    "not_utf8.yaml": GOOD_HW.replace("name: tiny", "name: t\xe9").encode("latin-1"),
    "utf16.yaml": GOOD_HW.encode("utf-16"),
}


def onnx_cases() -> dict[str, bytes]:
    """Tiny malformed ONNX models (built with onnx.helper, then broken)."""
    import onnx
    from onnx import TensorProto, helper

    def model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
        g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])

    def vi(name, shape, t=TensorProto.FLOAT):
        return helper.make_tensor_value_info(name, t, shape)

    relu = [helper.make_node("Relu", ["x"], ["y"])]
    good = model(relu, [vi("x", [2, 4])], [vi("y", [2, 4])])
    raw = good.SerializeToString()
    cases: dict[str, bytes] = {
        "negative_dim": model(relu, [vi("x", [-768, 4])], [vi("y", [-768, 4])]).SerializeToString(),
        "negative_second_dim": model(relu, [vi("x", [2, -4])], [vi("y", [2, -4])]).SerializeToString(),
        "huge_dim": model(relu, [vi("x", [2**62, 4])], [vi("y", [2**62, 4])]).SerializeToString(),
        "huge_elements": model(relu, [vi("x", [2**30, 2**30, 2**30])], [vi("y", None)]).SerializeToString(),
        "unbound_symbolic_dim": model(relu, [vi("x", ["batch", 4])], [vi("y", ["batch", 4])]).SerializeToString(),
        "truncated": raw[: len(raw) // 2],
        "empty": b"",
        "random_bytes": bytes((i * 37 + 11) % 256 for i in range(512)),
        "text_file": b"this is not an onnx model\n",
        "unknown_op": model([helper.make_node("Frobnicate", ["x"], ["y"])], [vi("x", [2, 4])],
                            [vi("y", [2, 4])]).SerializeToString(),
        "unknown_attribute": model([helper.make_node("Relu", ["x"], ["y"], axs=1)], [vi("x", [2, 4])],
                                   [vi("y", [2, 4])]).SerializeToString(),
        "softmax_attribute_typo": model([helper.make_node("Softmax", ["x"], ["y"], axes=1)],
                                        [vi("x", [2, 4])], [vi("y", [2, 4])]).SerializeToString(),
        "extra_input": model([helper.make_node("Relu", ["x", "x"], ["y"])], [vi("x", [2, 4])],
                             [vi("y", [2, 4])]).SerializeToString(),
        "missing_input": model([helper.make_node("Add", ["x"], ["y"])], [vi("x", [2, 4])],
                               [vi("y", [2, 4])]).SerializeToString(),
        "undefined_input": model([helper.make_node("Relu", ["nope"], ["y"])], [vi("x", [2, 4])],
                                 [vi("y", [2, 4])]).SerializeToString(),
        "cycle": model([helper.make_node("Add", ["x", "z"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
                       [vi("x", [2, 4])], [vi("z", [2, 4])]).SerializeToString(),
        "output_undefined": model(relu, [vi("x", [2, 4])], [vi("nope", [2, 4])]).SerializeToString(),
        "matmul_mismatch": model([helper.make_node("MatMul", ["x", "x"], ["y"])], [vi("x", [2, 4])],
                                 [vi("y", [2, 4])]).SerializeToString(),
        "foreign_domain": model([helper.make_node("Relu", ["x"], ["y"], domain="com.evil")],
                                [vi("x", [2, 4])], [vi("y", [2, 4])]).SerializeToString(),
        "opset_absurd": model(relu, [vi("x", [2, 4])], [vi("y", [2, 4])], opset=9999).SerializeToString(),
    }
    # an initializer whose raw data is shorter than its dims say
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4], raw_data=b"\x00" * 8)
    cases["initializer_short_raw"] = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [2, 4])],
                                           [vi("y", [2, 4])], [w]).SerializeToString()
    # an initializer with a negative dim
    wn = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, -4])
    cases["initializer_negative_dim"] = model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                                              [vi("x", [2, 4])], [vi("y", [2, 4])], [wn]).SerializeToString()
    # external data that escapes the model's folder
    we = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.0] * 16)
    we.ClearField("float_data")
    we.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "64")):
        e = we.external_data.add()
        e.key, e.value = k, v
    cases["external_data_escape"] = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [2, 4])],
                                          [vi("y", [2, 4])], [we]).SerializeToString()
    wa = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.0] * 16)
    wa.ClearField("float_data")
    wa.data_location = TensorProto.EXTERNAL
    e = wa.external_data.add()
    e.key, e.value = "location", "/etc/hostname"
    cases["external_data_absolute"] = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [2, 4])],
                                            [vi("y", [2, 4])], [wa]).SerializeToString()
    wm = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.0] * 16)
    wm.ClearField("float_data")
    wm.data_location = TensorProto.EXTERNAL
    e = wm.external_data.add()
    e.key, e.value = "location", "missing.bin"
    cases["external_data_missing"] = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [2, 4])],
                                           [vi("y", [2, 4])], [wm]).SerializeToString()
    return cases


CLI = {
    # outputs that alias inputs or each other, or cannot be written
    "json_is_workload": "run {workload} --hw {hw} --json {workload}",
    "trace_is_workload": "run {workload} --hw {hw} --trace {workload}",
    "plot_is_workload": "run {workload} --hw {hw} --plot {workload}",
    "json_is_hw": "run {workload} --hw {hw} --json {hw}",
    "trace_is_hw": "run {workload} --hw {hw} --trace {hw}",
    "json_is_onnx": "run {onnx} --hw {hw} --json {onnx}",
    "json_is_bundled_spec": "run {workload} --hw h100 --json {repo}/hwspecs/h100.yaml",
    "json_via_symlink_to_input": "run {workload} --hw {hw} --json {link}",
    "json_same_as_trace": "run {workload} --hw {hw} --json {tmp}/out.json --trace {tmp}/out.json",
    "json_same_as_plot": "run {workload} --hw {hw} --json {tmp}/out.png --plot {tmp}/out.png",
    "json_is_directory": "run {workload} --hw {hw} --json {dir}",
    "json_trailing_slash": "run {workload} --hw {hw} --json {tmp}/newdir/",
    "json_folder_is_file": "run {workload} --hw {hw} --json {workload}/out.json",
    "json_is_fifo": "run {workload} --hw {hw} --json {fifo}",
    "json_is_dev_null": "run {workload} --hw {hw} --json /dev/null",
    "trace_in_proc": "run {workload} --hw {hw} --trace /proc/self/out.json",
    "plot_unknown_format": "run {workload} --hw {hw} --plot {tmp}/plot.xyz",
    "plot_no_extension": "run {workload} --hw {hw} --plot {tmp}/plot",
    "plot_yaml_extension": "run {workload} --hw {hw} --plot {tmp}/plot.yaml",
    # inputs that are not files
    "workload_fifo": "run {fifo} --hw {hw}",
    "workload_directory": "run {dir} --hw {hw}",
    "workload_missing": "run {tmp}/nope.yaml --hw {hw}",
    "workload_unknown_name": "run resnet5O --hw {hw}",
    "workload_unknown_extension": "run {tmp}/notes.txt --hw {hw}",
    "workload_dev_zero": "run /dev/zero --hw {hw}",
    "hw_fifo": "run {workload} --hw {fifo}",
    "hw_directory_yaml": "run {workload} --hw {yamldir}",
    "hw_unknown": "run {workload} --hw h1000",
    "hw_missing_file": "run {workload} --hw {tmp}/nope.yaml",
    "onnx_fifo": "run {fifoonnx}",
    # options
    "streams_zero": "run {workload} --hw {hw} --streams 0",
    "streams_negative": "run {workload} --hw {hw} --streams -1",
    "streams_huge": "run {workload} --hw {hw} --streams 100000000",
    "streams_text": "run {workload} --hw {hw} --streams many",
    "top_negative": "run {workload} --hw {hw} --top -1",
    "set_fraction": "run {workload} --hw {hw} --set batch=2.5",
    "set_negative": "run {workload} --hw {hw} --set batch=-4",
    "set_zero": "run {workload} --hw {hw} --set batch=0",
    "set_nan": "run {workload} --hw {hw} --set batch=nan",
    "set_inf": "run {workload} --hw {hw} --set batch=inf",
    "set_overflow": "run {workload} --hw {hw} --set batch=1e999",
    "set_huge": "run {workload} --hw {hw} --set batch=100000000000000000000",
    "set_no_equals": "run {workload} --hw {hw} --set batch",
    "set_empty_key": "run {workload} --hw {hw} --set =4",
    "set_unknown_param": "run {workload} --hw {hw} --set bacth=4",
    "set_expression_text": "run {workload} --hw {hw} --set batch=__import__",
    "hw_set_bandwidth_zero": "run {workload} --hw h100 --hw-set memory.hbm.bandwidth=0",
    "hw_set_bandwidth_text_zero": "run {workload} --hw h100 --hw-set 'memory.hbm.bandwidth=0 TB/s'",
    "hw_set_efficiency_zero": "run {workload} --hw h100 --hw-set memory.hbm.efficiency=0",
    "hw_set_efficiency_nan": "run {workload} --hw h100 --hw-set memory.hbm.efficiency=nan",
    "hw_set_efficiency_big": "run {workload} --hw h100 --hw-set memory.hbm.efficiency=2",
    "hw_set_peak_negative": "run {workload} --hw h100 --hw-set 'units.tensor.peak.bf16=-1 TFLOPS'",
    "hw_set_clock_zero": "run {workload} --hw h100 --hw-set 'arch.clock=0 GHz'",
    "hw_set_sms_fraction": "run {workload} --hw h100 --hw-set arch.sms=2.5",
    "hw_set_unknown_field": "run {workload} --hw h100 --hw-set memory.hbm.speed=1",
    "hw_set_unknown_level": "run {workload} --hw h100 --hw-set memory.hmb.bandwidth=1",
    "hw_set_empty_path": "run {workload} --hw h100 --hw-set ..=3",
    "hw_set_no_equals": "run {workload} --hw h100 --hw-set memory.hbm.bandwidth",
    "hw_set_bad_list": "run {workload} --hw h100 --hw-set 'arch.tiles=[1, 2'",
    "hw_set_capacity_unit": "run {workload} --hw h100 --hw-set 'memory.hbm.capacity=80 parsecs'",
    "hw_set_system_device_bandwidth": "run {workload} --hw dgx-h100 --hw-set devices.gpu.memory.hbm.bandwidth=0",
    "hw_set_system_device_clock": "run {workload} --hw dgx-h100 --hw-set 'devices.gpu.arch.clock=0 GHz'",
    "hw_set_system_count_huge": "run {workload} --hw dgx-h100 --hw-set devices.gpu.count=1000000000",
    "hw_set_system_host_sockets": "run {workload} --hw dgx-h100 --hw-set host.arch.sockets=0",
    "hw_set_system_switch_zero": "run {workload} --hw dgx-h100 --hw-set switch.bandwidth=0",
    "optimizer_without_train": "run {workload} --hw {hw} --optimizer adamw",
    "loss_without_train": "run {workload} --hw {hw} --loss mse",
    "checkpoint_without_train": "run {workload} --hw {hw} --checkpoint",
    "optimizer_unknown": "run {workload} --hw {hw} --train --optimizer nadamw",
    "loss_unknown": "run {workload} --hw {hw} --train --loss hinge",
    "dispatch_negative": "run {workload} --hw {hw} --dispatch -1",
    "dispatch_nan": "run {workload} --hw {hw} --dispatch nan",
    "dispatch_unit": "run {workload} --hw {hw} --dispatch '5 parsecs'",
    "dispatch_huge": "run {workload} --hw {hw} --dispatch 1e300",
    "place_no_equals": "run {workload} --hw {hw} --place fc",
    "place_unknown_device": "run {workload} --hw {hw} --place 'fc*=gpu7'",
    "parallel_zero": "run {workload} --hw h100 --train --parallel dp=0",
    "parallel_unknown": "run {workload} --hw h100 --parallel zz=3",
    "dtype_unknown": "run {workload} --hw {hw} --dtype fp13",
    "unknown_option": "run {workload} --hw {hw} --jsno out.json",
    "unknown_command": "frobnicate",
    "no_command": "",
    "run_without_workload": "run",
    "hw_show_unknown": "hw h1000",
    # sim train: every argument checked before the first epoch
    "train_epochs_zero": "train {mlp} --epochs 0",
    "train_epochs_negative": "train {mlp} --epochs -3",
    "train_batch_zero": "train {mlp} --batch 0",
    "train_lr_nan": "train {mlp} --lr nan",
    "train_lr_inf": "train {mlp} --lr inf",
    "train_lr_negative": "train {mlp} --lr -0.1",
    "train_lr_zero": "train {mlp} --lr 0",
    "train_optimizer_unknown": "train {mlp} --optimizer bogus",
    "train_hw_unknown": "train {mlp} --hw h1000",
    "train_hw_bad_file": "train {mlp} --hw {badhw}",
    "train_prune_over_one": "train {mlp} --prune 1.5",
    "train_prune_bad_pattern": "train {mlp} --prune 5:4",
    "train_prune_text": "train {mlp} --prune lots",
    "train_json_directory": "train {mlp} --json {dir}",
    "train_json_is_workload": "train {mlp} --json {mlp}",
    "train_json_unknown_folder_file": "train {mlp} --json {mlp}/r.json",
    "train_dataset_unknown": "train {mlp} --dataset cifar",
    "train_dtype_unknown": "train {mlp} --dtype fp8",
    "train_workload_fifo": "train {fifo}",
    "train_set_unknown": "train {mlp} --set nope=3",
    # the other subcommands: outputs never overwrite inputs, stores must be stores
    "sweep_csv_is_workload": "sweep {workload} --hw {hw} --grid batch=1,2 --csv {workload}",
    "sweep_store_is_workload": "sweep {workload} --hw {hw} --grid batch=1,2 --store {workload}",
    "sweep_store_fifo": "sweep {workload} --hw {hw} --grid batch=1,2 --store {fifo}",
    "sweep_grid_empty": "sweep {workload} --hw {hw} --grid batch=",
    "sweep_grid_bad_field": "sweep {workload} --hw {hw} --grid memory.hbm.bandwidth=0,1",
    "sweep_grid_over_limit": "# env: DLSIM_LIMIT_GRID_POINTS=3\nsweep {workload} --hw {hw} --grid batch=1,2 --grid d=4,8",
    "results_not_a_store": "results {workload}",
    "results_fifo": "results {fifo}",
    "results_directory": "results {dir}",
    "results_missing": "results {tmp}/nope.db",
    "results_csv_is_input": "results {tmp}/notes.txt --csv {tmp}/notes.txt",
    "plot_store_out_is_input": "plot {tmp}/notes.txt --out {tmp}/notes.txt",
    "plot_store_not_a_store": "plot {workload} --out {tmp}/p.png",
    "search_csv_is_workload": "search {workload} --hw dgx-h100 --set batch=8 --csv {workload}",
    "search_tp_text": "search gpt2 --hw dgx-h100 --set batch=8 --tp abc",
    "calibrate_output_directory": "calibrate -o {dir} --quick",
    "calibrate_output_is_fifo": "calibrate -o {fifo} --quick",
    "validate_repeat_zero": "validate {workload} --hw {hw} --repeat 0",
    "validate_threads_negative": "validate {workload} --hw {hw} --threads -1",
    # limits, overridable through the environment
    "limit_input_bytes": "# env: DLSIM_LIMIT_INPUT_BYTES=64\nrun {workload} --hw {hw}",
    "limit_bad_env_value": "# env: DLSIM_LIMIT_REPEAT=lots\nrun {repeated} --hw {hw}",
    "limit_repeat_lowered": "# env: DLSIM_LIMIT_REPEAT=2\nrun {repeated} --hw {hw}",
    "limit_yaml_depth_lowered": "# env: DLSIM_LIMIT_YAML_DEPTH=3\nrun {workload} --hw {hw}",
    "limit_streams_lowered": "# env: DLSIM_LIMIT_STREAMS=2\nrun {workload} --hw {hw} --streams 3",
    "limit_graph_nodes_lowered": "# env: DLSIM_LIMIT_GRAPH_NODES=1\nrun {workload} --hw {hw}",
    "limit_env_zero": "# env: DLSIM_LIMIT_GRAPH_NODES=0\nrun {onnx} --hw {hw}",
    "limit_yaml_nodes_lowered": "# env: DLSIM_LIMIT_YAML_NODES=10\nrun {workload} --hw {hw}",
    "limit_onnx_bytes": "# env: DLSIM_LIMIT_ONNX_BYTES=10\nrun {onnx} --hw {hw}",
}

API = {
    "simulate_streams_zero": "sim.simulate(sim.load(WORKLOAD), 'h100', streams=0)",
    "simulate_streams_huge": "sim.simulate(sim.load(WORKLOAD), 'h100', streams=10**9)",
    "simulate_streams_float": "sim.simulate(sim.load(WORKLOAD), 'h100', streams=1.5)",
    "simulate_oom_mode": "sim.simulate(sim.load(WORKLOAD), 'h100', oom='maybe')",
    "simulate_unknown_hw": "sim.simulate(sim.load(WORKLOAD), 'h1000')",
    "simulate_dispatch_text": "sim.simulate(sim.load(WORKLOAD), 'h100', dispatch_s='soon')",
    "load_missing": "sim.load(TMP + '/nope.yaml')",
    "load_fifo": "sim.load(FIFO)",
    "load_params_fraction": "sim.load(WORKLOAD, batch=2.5)",
    "load_params_unknown": "sim.load(WORKLOAD, nope=3)",
    "hardware_unknown": "sim.hardware('h1000')",
    "hardware_override_nan": "sim.hardware('h100', **{'memory.hbm.efficiency': float('nan')})",
    "hardware_override_zero": "sim.hardware('h100', **{'memory.hbm.bandwidth': 0})",
    "tensor_fraction_dim": "sim.TensorSpec((2.5, 3))",
    "tensor_negative_dim": "sim.TensorSpec((-1, 3))",
    "tensor_huge": "sim.TensorSpec((2**62, 2**62))",
    "graph_unknown_op": "g = sim.Graph('g'); g.add_input('x', sim.TensorSpec((2,))); g.add_node('Rleu', ['x'])",
    "yaml_text_alias_bomb": "load_yaml_text('a: &a [1,1,1,1,1,1,1,1,1,1]\\n' + ''.join("
                            "f'a{i}: &a{i} [' + ', '.join([f\"*a{i-1}\" if i > 1 else '*a'] * 10) + ']\\n' "
                            "for i in range(1, 9)))",
    "yaml_text_duplicate_key": "load_yaml_text('name: a\\nname: b\\ngraph: []\\n')",
    "expr_tower": "evaluate('9**9**9**9', {})",
    "atomic_write_directory": "atomic_write(TMP, 'x')",
    "load_none": "sim.load(None)",
    "load_param_huge": "sim.load(WORKLOAD, batch=10**30)",
    "simulate_dtype": "sim.simulate(sim.load(WORKLOAD), 'h100', dtype='fp13')",
    "simulate_placement": "sim.simulate(sim.load(WORKLOAD), 'h100', placement={'*': 'gpu9'})",
    "simulate_dispatch_negative": "sim.simulate(sim.load(WORKLOAD), 'h100', dispatch_s=-1.0)",
    "simulate_cost_fn_nan": "sim.simulate(sim.load(WORKLOAD), 'h100', cost_fn=lambda *a: float('nan'))",
    "simulate_hw_not_a_spec": "sim.simulate(sim.load(WORKLOAD), 42)",
    "plot_unknown_format": "sim.simulate(sim.load(WORKLOAD), 'h100').plot(TMP + '/p.xyz')",
    "write_json_over_directory": "sim.simulate(sim.load(WORKLOAD), 'h100').write_json(TMP)",
    "training_graph_optimizer": "sim.training_graph(sim.load(WORKLOAD), optimizer='nadamw')",
}


def write(root: Path = HERE) -> int:
    """Write every case under ``root``; returns how many files."""
    import onnx  # noqa: F401  (fail early if missing)

    for sub in ("hw", "workload", "onnx", "cli", "api"):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir(parents=True)
    n = 0
    for name, (old, new) in HW_SUBS.items():
        text = new if old is None else GOOD_HW.replace(old, new, 1)
        assert old is None or text != GOOD_HW, name
        (root / "hw" / f"{name}.yaml").write_text(text, encoding="utf-8")
        n += 1
    for name, text in SYSTEMS.items():
        (root / "hw" / f"{name}.yaml").write_text(text, encoding="utf-8")
        n += 1
    for name, data in BINARY_HW.items():
        (root / "hw" / name).write_bytes(data)
        n += 1
    for name, (old, new) in WL_SUBS.items():
        text = new if old is None else GOOD_WORKLOAD.replace(old, new, 1)
        assert old is None or text != GOOD_WORKLOAD, name
        (root / "workload" / f"{name}.yaml").write_text(text, encoding="utf-8")
        n += 1
    for name, data in BINARY_WORKLOADS.items():
        (root / "workload" / name).write_bytes(data)
        n += 1
    for name, data in onnx_cases().items():
        (root / "onnx" / f"{name}.onnx").write_bytes(data)
        n += 1
    for name, line in CLI.items():
        (root / "cli" / f"{name}.args").write_text(line + "\n", encoding="utf-8")
        n += 1
    for name, code in API.items():
        (root / "api" / f"{name}.api").write_text(code + "\n", encoding="utf-8")
        n += 1
    (root / "GOOD_HW.yaml.txt").write_text(GOOD_HW, encoding="utf-8")
    (root / "GOOD_WORKLOAD.yaml.txt").write_text(GOOD_WORKLOAD, encoding="utf-8")
    return n


if __name__ == "__main__":
    print(f"wrote {write()} cases under {os.path.relpath(HERE)}")
