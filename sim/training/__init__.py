"""Training for real on the NumPy executor: the ``Trainer`` loop and bundled datasets."""

from sim.training.trainer import Dataset, EpochLog, History, Trainer, load_dataset, resize_bilinear

__all__ = ["Dataset", "EpochLog", "History", "Trainer", "load_dataset", "resize_bilinear"]
