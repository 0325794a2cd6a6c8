"""Small ONNX networks built with onnx.helper, spelled as exporters spell them (for tests)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


class _Builder:
    def __init__(self, seed: int = 0, weights_as_inputs: bool = False) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []
        self.weights_as_inputs = weights_as_inputs
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def weight(self, name: str, shape, scale: float = 0.05, value=None) -> str:
        arr = value if value is not None else (self.rng.standard_normal(shape) * scale)
        arr = np.asarray(arr, np.float32)
        if self.weights_as_inputs:
            self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
        else:
            self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, values) -> str:
        name = self.name("const")
        self.nodes.append(helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(np.asarray(values, np.int64))))
        return name

    def scalar(self, v: float) -> str:
        name = self.name("scalar")
        self.nodes.append(helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(np.array(v, np.float32))))
        return name

    def op(self, op: str, inputs, n_out: int = 1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=self.name(f"n_{op}"), **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, inputs, outputs, opset: int = 17):
        g = helper.make_graph(self.nodes, "net", list(inputs) + self.inputs, outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        return m


def bert_layers(batch: int = 2, seq: int = 8, hidden: int = 32, heads: int = 4, ffn: int = 64,
                layers: int = 1, vocab: int = 0, weights_as_inputs: bool = False, seed: int = 0):
    """A BERT encoder (post-LN, erf GELU) as torch's exporter writes it.

    With ``vocab`` the input is int64 token ids [batch, seq] through word and position
    embeddings (Gather) and a LayerNorm; otherwise the input is hidden states [batch, seq, hidden].
    """
    b = _Builder(seed, weights_as_inputs)
    dh = hidden // heads

    def linear(x, i, o, name):
        w = b.weight(f"{name}.weight", (i, o))
        bias = b.weight(f"{name}.bias", (o,), 0.01)
        return b.op("Add", [b.op("MatMul", [x, w]), bias])

    def layernorm(x, name):
        g = b.weight(f"{name}.weight", (hidden,), value=np.ones(hidden) + 0.1 * b.rng.standard_normal(hidden))
        be = b.weight(f"{name}.bias", (hidden,), 0.01)
        return b.op("LayerNormalization", [x, g, be], axis=-1, epsilon=1e-12)

    if vocab:
        ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq])
        emb = b.op("Gather", [b.weight("embeddings.word.weight", (vocab, hidden), 0.02), "input_ids"])
        pos = b.weight("embeddings.position.weight", (seq, hidden), 0.02)
        x = layernorm(b.op("Add", [emb, pos]), "embeddings.LayerNorm")
        graph_in = ids
    else:
        graph_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, seq, hidden])
        x = "x"
    heads_shape = b.ints([batch, seq, heads, dh])
    merged = b.ints([batch, seq, hidden])
    for li in range(layers):
        p = f"encoder.layer.{li}"
        q = b.op("Transpose", [b.op("Reshape", [linear(x, hidden, hidden, f"{p}.attention.query"),
                                                heads_shape])], perm=[0, 2, 1, 3])
        k = b.op("Transpose", [b.op("Reshape", [linear(x, hidden, hidden, f"{p}.attention.key"),
                                                heads_shape])], perm=[0, 2, 3, 1])
        v = b.op("Transpose", [b.op("Reshape", [linear(x, hidden, hidden, f"{p}.attention.value"),
                                                heads_shape])], perm=[0, 2, 1, 3])
        s = b.op("Div", [b.op("MatMul", [q, k]), b.scalar(float(np.sqrt(dh)))])
        pr = b.op("Softmax", [s], axis=-1)
        ctx = b.op("Reshape", [b.op("Transpose", [b.op("MatMul", [pr, v])], perm=[0, 2, 1, 3]), merged])
        a = linear(ctx, hidden, hidden, f"{p}.attention.output")
        h1 = layernorm(b.op("Add", [a, x]), f"{p}.attention.LayerNorm")
        f = linear(h1, hidden, ffn, f"{p}.intermediate")
        # GELU as the exporter spells it: x * 0.5 * (1 + erf(x / sqrt(2)))
        e = b.op("Erf", [b.op("Div", [f, b.scalar(float(np.sqrt(2.0)))])])
        gl = b.op("Mul", [b.op("Mul", [f, b.op("Add", [e, b.scalar(1.0)])]), b.scalar(0.5)])
        o = linear(gl, ffn, hidden, f"{p}.output")
        x = layernorm(b.op("Add", [o, h1]), f"{p}.output.LayerNorm")
    out = helper.make_tensor_value_info(x, TensorProto.FLOAT, None)
    return b.model([graph_in], [out])


def conv_bn_relu_block(channels: int = 4, size: int = 6, seed: int = 0):
    """Conv -> BatchNorm -> Relu -> Conv -> BatchNorm -> Add(residual) -> Relu."""
    b = _Builder(seed)
    c = channels
    x_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c, size, size])

    def conv_bn(x, name):
        w = b.weight(f"{name}.conv.weight", (c, c, 3, 3), 0.2)
        y = b.op("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        bn = [b.weight(f"{name}.bn.{k}", (c,), value=v) for k, v in (
            ("weight", 1 + 0.1 * b.rng.standard_normal(c)), ("bias", 0.1 * b.rng.standard_normal(c)),
            ("running_mean", 0.1 * b.rng.standard_normal(c)), ("running_var", b.rng.uniform(0.5, 1.5, c)))]
        return b.op("BatchNormalization", [y, *bn], epsilon=1e-5)

    h = b.op("Relu", [conv_bn("x", "l1")])
    y = b.op("Relu", [b.op("Add", [conv_bn(h, "l2"), "x"])])
    return b.model([x_in], [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)])


def resnet50(batch: int = 1, image: int = 224, classes: int = 1000, weights_as_inputs: bool = True,
             seed: int = 0):
    """ResNet-50 v1.5 (stride on the 3x3 conv) with BatchNorm kept, as an exporter in
    training-preserving mode writes it."""
    b = _Builder(seed, weights_as_inputs)
    x_in = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, image, image])

    def conv_bn(x, cin, cout, k, stride, name, relu=True):
        w = b.weight(f"{name}.weight", (cout, cin, k, k), 0.05)
        y = b.op("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
        bn = [b.weight(f"{name}.bn.{p}", (cout,), value=v) for p, v in (
            ("weight", np.ones(cout)), ("bias", np.zeros(cout)), ("running_mean", np.zeros(cout)),
            ("running_var", np.ones(cout)))]
        y = b.op("BatchNormalization", [y, *bn], epsilon=1e-5)
        return b.op("Relu", [y]) if relu else y

    h = conv_bn("input", 3, 64, 7, 2, "stem")
    h = b.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for li, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))):
        for bi in range(blocks):
            s = stride if bi == 0 else 1
            p = f"layer{li + 1}.{bi}"
            y = conv_bn(h, cin, width, 1, 1, f"{p}.conv1")
            y = conv_bn(y, width, width, 3, s, f"{p}.conv2")
            y = conv_bn(y, width, width * 4, 1, 1, f"{p}.conv3", relu=False)
            sc = conv_bn(h, cin, width * 4, 1, s, f"{p}.downsample", relu=False) if bi == 0 else h
            h = b.op("Relu", [b.op("Add", [y, sc])])
            cin = width * 4
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])], axis=1)
    y = b.op("Gemm", [h, b.weight("fc.weight", (classes, 2048)), b.weight("fc.bias", (classes,))],
             transB=1)
    return b.model([x_in], [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)])
