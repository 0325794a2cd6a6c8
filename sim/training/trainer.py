"""Training for real on the NumPy executor.

``Trainer`` builds the training graph of a forward graph once, keeps parameters and optimizer
states in its ``Executor`` between steps (each step's updated outputs are written back over
the parameters they replace, as ``graph.meta["updates"]`` says), and evaluates with the
forward graph on the same parameter arrays. Graph shapes are concrete, so minibatches have
the graph's batch size: training drops the last partial batch of each (shuffled) epoch and
evaluation pads the last batch and discards the padding.

Datasets: ``digits`` is scikit-learn's bundled 8x8 digits (1,797 images, no download;
scikit-learn is an optional dependency). Images are resized (bilinear) to the workload's
input: ``[N, 784]`` -> 28x28, ``[N, 1, 32, 32]`` -> 32x32, ``[N, 64]`` as is; channels are
repeated for RGB inputs; pixels are standardised with the training split's mean and std.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.errors import GraphError, SimError
from sim.exec import Executor
from sim.graph import Graph
from sim.passes.training import training_graph

# ----------------------------------------------------------------- datasets


@dataclass
class Dataset:
    """A classification dataset split into training and held-out test parts."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``[N, H, W]`` images with bilinear interpolation (half-pixel centres).

    >>> resize_bilinear(np.array([[[0.0, 1.0]]]), 1, 4).round(2).tolist()
    [[[0.0, 0.25, 0.75, 1.0]]]
    """

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(c).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, c - i0

    r0, r1, fr = axis(height, images.shape[1])
    c0, c1, fc = axis(width, images.shape[2])
    rows = images[:, r0] * (1 - fr)[None, :, None] + images[:, r1] * fr[None, :, None]
    return rows[:, :, c0] * (1 - fc)[None, None, :] + rows[:, :, c1] * fc[None, None, :]


def _adapt(images: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """``[N, h, w]`` images -> ``[N, *shape[1:]]`` (flat, NCHW or NHWC)."""
    rest = shape[1:]
    if len(rest) == 1:
        side = math.isqrt(rest[0])
        if side * side != rest[0]:
            raise GraphError(f"input of {rest[0]} features is not a square image", where=where)
        return resize_bilinear(images, side, side).reshape(len(images), -1)
    if len(rest) == 3:
        if rest[0] in (1, 3):  # NCHW
            out = resize_bilinear(images, rest[1], rest[2])[:, None]
            return np.repeat(out, rest[0], axis=1)
        if rest[2] in (1, 3):  # NHWC
            out = resize_bilinear(images, rest[0], rest[1])[..., None]
            return np.repeat(out, rest[2], axis=3)
    if len(rest) == 2:
        return resize_bilinear(images, rest[0], rest[1])
    raise GraphError(f"cannot adapt 8x8 images to input shape {shape}", where=where)


def load_dataset(name: str, input_shape: tuple[int, ...], seed: int = 0,
                 test_fraction: float = 0.2) -> Dataset:
    """A bundled dataset shaped for a graph input ``input_shape`` (batch first)."""
    if name != "digits":
        raise SimError(f"unknown dataset {name!r} (bundled: digits)", where="--dataset")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SimError("the digits dataset needs scikit-learn: pip install 'dlsim[data]' "
                       "(or scikit-learn)", where="--dataset") from None
    data = load_digits()
    images = np.asarray(data.images, np.float64) / 16.0
    labels = np.asarray(data.target, np.int64)
    perm = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    x = _adapt(images, input_shape, where="dataset digits")
    mean, std = float(x[train].mean()), float(x[train].std())
    x = ((x - mean) / std).astype(np.float32)
    return Dataset(name, x[train], labels[train], x[test], labels[test], 10)


# ----------------------------------------------------------------- trainer


@dataclass
class EpochLog:
    epoch: int
    loss: float
    test_accuracy: float | None = None


@dataclass
class History:
    epochs: list[EpochLog] = field(default_factory=list)

    @property
    def losses(self) -> list[float]:
        return [e.loss for e in self.epochs]


class Trainer:
    """Trains a forward graph with the NumPy executor; parameters persist between steps.

    ``masks`` (parameter -> 0/1 array) keep pruned weights at zero: they are applied after
    every update (see ``sim.passes.sparsity``). Training-mode ``Dropout`` nodes draw a new
    mask every step: their seeds advance with the step count (a forward node and its
    gradient share a seed, so they keep sharing the mask).
    """

    def __init__(
        self,
        forward: Graph,
        *,
        loss: str = "cross_entropy",
        optimizer: str = "adam",
        seed: int = 0,
        train_graph: Graph | None = None,
        **hyper: Any,
    ) -> None:
        self.forward = forward
        self.graph = (train_graph or training_graph(forward, loss, optimizer, **hyper)).copy()
        self.dropout_seeds = {n.name: int(n.attrs.get("seed", 0)) for n in self.graph.nodes.values()
                              if n.op == "Dropout" and int(n.attrs.get("training_mode", 0))}
        self.steps = 0
        self.seed = seed
        self.executor = Executor(self.graph, seed=seed)
        self.params = self.executor.params
        self._eval = Executor(forward, seed=seed, params={p: self.params[p] for p in forward.params})
        self.input = next(iter(forward.inputs))
        self.batch = forward.inputs[self.input].shape[0]
        self.labels = str(self.graph.meta["labels"])
        self.masks: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)

    # --------------------------------------------------------------- stepping
    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One optimizer step on one minibatch; returns the loss."""
        for name, base in self.dropout_seeds.items():
            self.graph.nodes[name].attrs["seed"] = (base + 7919 * self.steps) & 0x7FFFFFFF
        self.steps += 1
        out = self.executor.run({self.input: x, self.labels: y}, record_times=False).values
        for o, p in self.graph.meta["updates"].items():
            self.params[p] = out[o]
        for p, m in self.masks.items():
            self.params[p] = (self.params[p] * m).astype(self.params[p].dtype)
        return float(out[self.graph.meta["loss"]])

    def set_masks(self, masks: Mapping[str, np.ndarray]) -> None:
        """Keep these parameters' masked entries at zero from now on."""
        self.masks = {p: np.asarray(m) for p, m in masks.items()}
        for p, m in self.masks.items():
            self.params[p] = (self.params[p] * m).astype(self.params[p].dtype)

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int,
            x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
            on_epoch: Callable[[EpochLog], None] | None = None) -> History:
        """``epochs`` passes over shuffled minibatches; mean loss (and test accuracy) per epoch."""
        n_batches = len(x) // self.batch
        if n_batches == 0:
            raise GraphError(f"{len(x)} training samples are fewer than the batch of {self.batch}")
        hist = History()
        for epoch in range(1, epochs + 1):
            perm = self.rng.permutation(len(x))
            losses = []
            for b in range(n_batches):
                idx = perm[b * self.batch:(b + 1) * self.batch]
                losses.append(self.step(x[idx], y[idx]))
            acc = self.accuracy(x_test, y_test) if x_test is not None and y_test is not None else None
            log = EpochLog(epoch, float(np.mean(losses)), acc)
            hist.epochs.append(log)
            if on_epoch is not None:
                on_epoch(log)
        return hist

    # --------------------------------------------------------------- evaluating
    def predict(self, x: np.ndarray) -> np.ndarray:
        """The forward graph's first output for every sample (padding the last batch)."""
        for p in self.forward.params:
            self._eval.params[p] = self.params[p]
        outs = []
        out_name = self.forward.outputs[0]
        for start in range(0, len(x), self.batch):
            chunk = x[start:start + self.batch]
            pad = self.batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            y = self._eval.run({self.input: chunk}, record_times=False).values[out_name]
            outs.append(np.asarray(y, np.float32)[:len(chunk) - pad])
        return np.concatenate(outs)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Fraction of samples whose arg-max score is the label."""
        scores = self.predict(x)
        return float(np.mean(np.argmax(scores.reshape(len(x), scores.shape[1], -1)[:, :, 0], axis=1) == y))
