"""Graph -> graph transforms. Each returns a new graph and leaves its input alone."""

from sim.passes.autodiff import GradBuilder, gradients

__all__ = ["GradBuilder", "gradients"]
