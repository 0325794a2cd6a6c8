"""NumPy execution of graphs."""

from sim.exec.executor import Executor, RunRecord, execute, init_param

__all__ = ["Executor", "RunRecord", "execute", "init_param"]
