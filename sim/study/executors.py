"""Where a study's points run: in this process, a local process pool, a Dask distributed cluster
or Ray. Each executor takes a function and a list of configurations and yields
``(index, result)`` as points finish, so the caller can store each one at once.

``executor`` strings: ``"local"`` (a process pool on every core; ``"local:4"`` four workers),
``"serial"`` (this process, one by one), ``"dask"`` (a ``distributed.LocalCluster`` with one
single-threaded worker process per core), ``"dask://host:8786"`` (an existing scheduler),
``"ray"`` (``ray.init()``: a local Ray, or the cluster ``RAY_ADDRESS`` names) or
``"ray://host:10001"``. A ``distributed.Client`` object may be passed instead of a string.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sim.errors import SimError

Fn = Callable[[Any], Any]


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_serial(fn: Fn, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
    for i, item in enumerate(items):
        yield i, fn(item)


def run_local(fn: Fn, items: Sequence[Any], workers: int | None = None) -> Iterator[tuple[int, Any]]:
    """A process pool. Workers are forked where the platform can (they start with the simulator
    already imported, and a script calling ``sweep`` needs no ``__main__`` guard); spawned
    elsewhere."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    n = max(1, min(workers or cpu_count(), len(items)))
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx)
    try:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in sorted(done, key=lambda f: futures[f]):
                yield futures[f], f.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _dask_client(address: str | None, workers: int | None) -> tuple[Any, Any]:
    """A ``(client, cluster)``: a new LocalCluster when ``address`` is None (cluster is then ours
    to close), else a client of the scheduler at ``address``."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SimError("dask executor needs dask[distributed] (pip install 'dask[distributed]')",
                       where="--executor") from None
    if address:
        try:
            return Client(address, timeout="10s"), None
        except OSError as err:
            raise SimError(f"cannot reach the Dask scheduler at {address}: {err}",
                           where="--executor") from None
    cluster = LocalCluster(n_workers=workers or cpu_count(), threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


def run_dask(fn: Fn, items: Sequence[Any], address: str | None = None, workers: int | None = None,
             client: Any | None = None) -> Iterator[tuple[int, Any]]:
    """Every point a Dask task (``pure=False``: the store, not Dask, decides what is done)."""
    from distributed import as_completed

    own_cluster = None
    if client is None:
        client, own_cluster = _dask_client(address, workers)
        own_client = True
    else:
        own_client = False
    try:
        futures = [client.submit(fn, item, pure=False) for item in items]
        index = {f.key: i for i, f in enumerate(futures)}
        for f in as_completed(futures):
            yield index[f.key], f.result()
    finally:
        if own_client:
            client.close()
        if own_cluster is not None:
            own_cluster.close()


def run_ray(fn: Fn, items: Sequence[Any], address: str | None = None) -> Iterator[tuple[int, Any]]:
    """Every point a Ray task (the ``ray`` extra)."""
    try:
        import ray
    except ImportError:
        raise SimError("ray executor needs ray (pip install 'dlsim[ray]')", where="--executor") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    try:
        remote = ray.remote(fn)
        refs = [remote.remote(item) for item in items]
        index = {r: i for i, r in enumerate(refs)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                yield index[r], ray.get(r)
    finally:
        if started:
            ray.shutdown()


def executor_runner(executor: Any, workers: int | None = None) -> Callable[[Fn, Sequence[Any]],
                                                                            Iterator[tuple[int, Any]]]:
    """The run function for an ``executor`` string (module docstring) or a Dask ``Client``."""
    if executor is None or executor == "local":
        return lambda fn, items: run_local(fn, items, workers)
    if not isinstance(executor, str):
        if type(executor).__name__ == "Client":
            return lambda fn, items: run_dask(fn, items, client=executor)
        raise SimError(f"unknown executor {executor!r}", where="--executor")
    if executor.startswith("local:"):
        try:
            n = int(executor.split(":", 1)[1])
        except ValueError:
            raise SimError(f"expected local:N, got {executor!r}", where="--executor") from None
        return lambda fn, items: run_local(fn, items, n)
    if executor == "serial":
        return run_serial
    if executor == "dask":
        return lambda fn, items: run_dask(fn, items, workers=workers)
    if executor.startswith(("dask://", "tcp://")):
        address = "tcp://" + executor.split("://", 1)[1]
        return lambda fn, items: run_dask(fn, items, address=address)
    if executor == "ray":
        return lambda fn, items: run_ray(fn, items)
    if executor.startswith("ray://"):
        return lambda fn, items: run_ray(fn, items, address=executor)
    raise SimError(f"unknown executor {executor!r} (local, local:N, serial, dask, dask://host:port, ray)",
                   where="--executor")
