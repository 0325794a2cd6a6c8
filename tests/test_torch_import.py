"""PyTorch import through torch.export: the imported graph reproduces the module's outputs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from sim.errors import UnsupportedOpError  # noqa: E402
from sim.exec import execute  # noqa: E402
from sim.frontends.torch_import import load_module  # noqa: E402

torch.manual_seed(0)


def _check(module, *inputs, rtol=1e-5, atol=1e-5):
    module.eval()
    g = load_module(module, inputs)
    with torch.no_grad():
        want = module(*inputs)
    feeds = dict(zip(g.inputs, (t.numpy() for t in inputs)))
    got = execute(g, feeds)[g.outputs[0]]
    np.testing.assert_allclose(got, want.numpy(), rtol=rtol, atol=atol)
    return g


def test_mlp():
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 4),
                      nn.LogSoftmax(dim=-1))
    g = _check(m, torch.randn(5, 8))
    assert g.param_count == sum(p.numel() for p in m.parameters())
    assert set(g.params) >= {"0.weight", "0.bias", "4.weight"}
    # three GEMMs 5x8x16, 5x16x16, 5x16x4 at 2 FLOP per multiply-add
    mm = sum(g.work(n).matmul_flops for n in g)
    assert mm == 2 * 5 * (8 * 16 + 16 * 16 + 16 * 4)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.pool(torch.relu(self.bn2(self.conv2(h))))
        h = nn.functional.avg_pool2d(h, 1)
        h = nn.functional.adaptive_avg_pool2d(h, (1, 1)).flatten(1)
        return self.fc(h)


def test_cnn_with_batchnorm_eval():
    m = SmallCNN()
    for bn in (m.bn1, m.bn2):  # non-trivial running statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    g = _check(m, torch.randn(2, 3, 8, 8), rtol=1e-4, atol=1e-5)
    assert not g.param_info["bn1.running_mean"].trainable
    assert g.param_info["bn1.weight"].trainable
    assert {n.op for n in g} >= {"Conv", "BatchNormalization", "MaxPool", "GlobalAveragePool"}


class EncoderLayer(nn.Module):
    def __init__(self, d=32, heads=4, ffn=64):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.emb = nn.Embedding(50, d)

    def forward(self, ids):
        x = self.emb(ids)
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.h, self.dh).permute(2, 0, 3, 1, 4).unbind(0)
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = self.ln1(x + self.proj(a.transpose(1, 2).reshape(b, s, d)))
        return self.ln2(x + self.ff2(nn.functional.gelu(self.ff1(x), approximate="tanh")))


def test_transformer_encoder_layer():
    m = EncoderLayer()
    ids = torch.randint(0, 50, (2, 6))
    g = _check(m, ids, rtol=1e-4, atol=1e-5)
    assert "Gather" in {n.op for n in g}


def test_unsupported_aten_op_is_named():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.linalg.det(x)

    with pytest.raises(UnsupportedOpError, match="ATen op"):
        load_module(Odd(), (torch.randn(3, 3),))


def test_small_bert_with_arange_and_zeros_like():
    from torch_nets import Bert

    m = Bert(vocab=100, d=32, layers=2, heads=4, ffn=64, max_pos=16)
    g = _check(m, torch.randint(0, 100, (2, 8)), rtol=1e-4, atol=1e-5)
    assert {"Range", "ConstantOfShape", "Gather", "LayerNormalization"} <= {n.op for n in g}


@pytest.mark.slow
def test_resnet50_module():
    from torch_nets import ResNet50

    m = ResNet50()
    g = _check(m, torch.randn(1, 3, 64, 64), rtol=1e-4, atol=1e-5)
    assert g.param_count == 25_557_032  # torchvision's ResNet-50


def test_torch_transformer_encoder_layer():
    m = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    g = _check(m, torch.randn(2, 6, 32), rtol=1e-4, atol=1e-5)
    assert {"Gemm", "Softmax", "LayerNormalization"} <= {n.op for n in g}
