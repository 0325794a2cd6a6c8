"""Small torch definitions of ResNet-50 and BERT-base for export tests (no downloads)."""

import torch
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.c1 = nn.Conv2d(cin, width, 1, bias=False)
        self.b1 = nn.BatchNorm2d(width)
        self.c2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.b2 = nn.BatchNorm2d(width)
        self.c3 = nn.Conv2d(width, cout, 1, bias=False)
        self.b3 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        h = torch.relu(self.b2(self.c2(h)))
        h = self.b3(self.c3(h))
        return torch.relu(h + (self.down(x) if self.down is not None else x))


class ResNet50(nn.Module):
    """ResNet-50 v1.5: stride on the 3x3 convolution of each first bottleneck."""

    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(2048, classes)

    def forward(self, x):
        h = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


class BertLayer(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.h = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1 = nn.LayerNorm(d, eps=1e-12)
        self.ln2 = nn.LayerNorm(d, eps=1e-12)
        self.f1, self.f2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x):
        b, s, d = x.shape
        dh = d // self.h

        def heads(t):
            return t.view(b, s, self.h, dh).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        p = torch.softmax(q @ k.transpose(-1, -2) / dh**0.5, dim=-1)
        a = (p @ v).transpose(1, 2).reshape(b, s, d)
        x = self.ln1(x + self.o(a))
        return self.ln2(x + self.f2(nn.functional.gelu(self.f1(x))))


class Bert(nn.Module):
    """BERT-base encoder (no pooler): embeddings + 12 post-LN layers."""

    def __init__(self, vocab=30522, d=768, layers=12, heads=12, ffn=3072, max_pos=512):
        super().__init__()
        self.word = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_pos, d)
        self.tok = nn.Embedding(2, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(d, heads, ffn) for _ in range(layers))

    def forward(self, ids):
        pos = torch.arange(ids.shape[1]).unsqueeze(0)
        x = self.ln(self.word(ids) + self.pos(pos) + self.tok(torch.zeros_like(ids)))
        for layer in self.layers:
            x = layer(x)
        return x


# ATen ops that only make views or metadata (no kernel on a device)
VIEWS = {"view", "_unsafe_view", "transpose", "t", "permute", "expand", "unsqueeze", "squeeze", "slice",
         "select", "as_strided", "detach", "alias", "split", "unbind", "lift_fresh", "_to_copy_view",
         "reshape", "flatten", "unflatten", "view_as", "expand_as", "arange", "zeros_like", "empty_like",
         "empty", "empty_strided", "scalar_tensor", "_local_scalar_dense", "sym_size", "sym_stride"}


def aten_ops(model, example) -> tuple[int, dict[str, int]]:
    """ATen compute ops one eager forward dispatches (views excluded), and a count per op."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts: dict[str, int] = {}

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name not in VIEWS:
                counts[name] = counts.get(name, 0) + 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Count():
        model(example)
    return sum(counts.values()), counts


class _Conv1D(nn.Module):
    """HF GPT-2's projection: ``addmm(bias, x, W)`` with W [in, out]."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.randn(nf) * 0.02)
        self.nf = nf

    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


class GPT2Block(nn.Module):
    """A GPT-2 layer written as HF transformers' ``GPT2Block`` runs it: ``attn="eager"`` is
    its hand-written attention (matmul, divide by ``full(sqrt d)``, ``where(causal, w,
    finfo.min)``, softmax, matmul), ``attn="sdpa"`` calls ``scaled_dot_product_attention``
    with ``is_causal=True``; the MLP's activation is ``NewGELUActivation``, the tanh formula
    written in Python (eight elementwise kernels in eager PyTorch)."""

    def __init__(self, d, heads, n_pos, attn="eager"):
        super().__init__()
        self.d, self.heads, self.attn = d, heads, attn
        self.register_buffer("causal", torch.tril(torch.ones(n_pos, n_pos, dtype=torch.bool)).view(
            1, 1, n_pos, n_pos), persistent=False)
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = _Conv1D(3 * d, d), _Conv1D(d, d)
        self.c_fc, self.mlp_proj = _Conv1D(4 * d, d), _Conv1D(d, 4 * d)

    def _heads(self, t):
        b, s, _ = t.shape
        return t.view(b, s, self.heads, self.d // self.heads).permute(0, 2, 1, 3)

    def _attention(self, x):
        q, k, v = (self._heads(t) for t in self.c_attn(x).split(self.d, dim=2))
        if self.attn == "sdpa":
            o = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            w = torch.matmul(q, k.transpose(-1, -2)) / torch.full([], v.size(-1) ** 0.5)
            s = q.size(-2)
            w = torch.where(self.causal[:, :, :s, :s], w, torch.full([], torch.finfo(w.dtype).min))
            o = torch.matmul(nn.functional.softmax(w, dim=-1), v)
        o = o.permute(0, 2, 1, 3).contiguous()
        return self.c_proj(o.view(o.size(0), o.size(1), self.d))

    def forward(self, x):
        x = x + self._attention(self.ln_1(x))
        h = self.c_fc(self.ln_2(x))
        h = 0.5 * h * (1.0 + torch.tanh((2.0 / torch.pi) ** 0.5 * (h + 0.044715 * torch.pow(h, 3.0))))
        return x + self.mlp_proj(h)


class GPT2(nn.Module):
    def __init__(self, vocab=50, d=32, layers=2, heads=4, n_pos=16, attn="eager"):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(n_pos, d)
        self.h = nn.ModuleList(GPT2Block(d, heads, n_pos, attn) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]).unsqueeze(0))
        for block in self.h:
            x = block(x)
        return self.ln_f(x)
