"""``sweep``: run every point of a grid on an executor, store each as it finishes, and return
the table (a pandas DataFrame, one row per point)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.errors import SimError
from sim.study.axes import expand
from sim.study.executors import executor_runner
from sim.study.point import METRICS, make_config, point_key, run_point, spec_for


@dataclass
class Plan:
    """The points of a study: their axis values, configurations and keys, in grid order."""

    study: str
    axes: list[str]
    points: list[dict[str, Any]]
    configs: list[dict[str, Any]]
    keys: list[str]
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    reused: int = 0  # distinct points found in the store by the last ``execute``
    ran: int = 0  # distinct points the last ``execute`` simulated


def plan(workload: str | None, hw: str, grid: Mapping[str, Sequence[Any]], *,
         base: Mapping[str, Any] | None = None, mode: str = "product", study: str = "sweep",
         metrics: Sequence[str] | None = None) -> Plan:
    """Expand the grid and key every point (bad fields or values raise SimError here, before
    anything runs)."""
    if not grid:
        raise SimError("a sweep needs at least one axis (--grid FIELD=V1,V2,...)", where="grid")
    if workload is None and "workload" not in grid:
        raise SimError("no workload given", where="sweep")
    for m in metrics or []:
        if m not in METRICS:
            raise SimError(f"unknown metric {m!r} (known: {', '.join(METRICS)})", where="metrics")
    points = expand(grid, mode)
    specs: dict[str, Any] = {}
    configs, keys = [], []
    for pt in points:
        cfg = make_config(str(workload or ""), hw, {**(base or {}), **pt}, pt)
        sk = json.dumps([cfg["hw"], cfg["spec_overrides"]], sort_keys=True, default=str)
        if sk not in specs:
            specs[sk] = spec_for(cfg)
        configs.append(cfg)
        keys.append(point_key(cfg, specs[sk]))
    return Plan(study, list(grid), points, configs, keys, list(metrics or METRICS))


def _progress(total: int, initial: int, show: bool | None, desc: str = "sweep") -> Any:
    """A tqdm bar on stderr (ETA, rate, failures so far); silent when stderr is not a terminal."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: the local pool forks
    if show is None:
        show = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, unit="pt", disable=not show, dynamic_ncols=True,
                desc=desc, file=sys.stderr)


def execute(p: Plan, store: str | os.PathLike[str] | None = None, executor: Any = "local", *,
            workers: int | None = None, progress: bool | None = None) -> dict[str, dict[str, Any]]:
    """Run the plan's points not yet in ``store``; key -> outcome for every point of the plan."""
    from sim.study.store import Store

    st = Store(store) if store is not None else None
    try:
        done = st.done_keys(p.keys) if st else set()
        todo: dict[str, int] = {}
        for i, k in enumerate(p.keys):
            if k not in done and k not in todo:
                todo[k] = i
        order = list(todo.values())
        p.reused, p.ran = len(set(p.keys)) - len(order), len(order)
        outcomes: dict[str, dict[str, Any]] = {}
        failed = 0
        bar = _progress(len(set(p.keys)), len(set(p.keys)) - len(order), progress)
        try:
            runner = executor_runner(executor, workers)
            for j, out in runner(run_point, [p.configs[i] for i in order]) if order else ():
                i = order[j]
                outcomes[p.keys[i]] = out
                if st:
                    st.add(p.keys[i], p.study, i, p.configs[i], out)
                if out.get("error"):
                    failed += 1
                    bar.set_postfix(failed=failed, refresh=False)
                bar.update(1)
        finally:
            bar.close()
        if st:
            for row in st.rows(done):
                outcomes[row["key"]] = row
        return outcomes
    finally:
        if st:
            st.close()


def table(p: Plan, outcomes: Mapping[str, Mapping[str, Any]]) -> Any:
    """The DataFrame: axis values, metrics, ``error``, ``key``; one row per point in grid order."""
    import pandas as pd

    rows = []
    for pt, k in zip(p.points, p.keys):
        out = outcomes.get(k, {"error": "not run"})
        rows.append({**pt, **{m: out.get(m) for m in p.metrics}, "error": out.get("error"), "key": k})
    df = pd.DataFrame(rows, columns=[*p.axes, *p.metrics, "error", "key"])
    for m in p.metrics:
        df[m] = pd.to_numeric(df[m], errors="coerce")
    return df


def sweep(workload: str | None = None, hw: str = "h100", grid: Mapping[str, Sequence[Any]] | None = None,
          store: str | os.PathLike[str] | None = None, executor: Any = "local", *,
          base: Mapping[str, Any] | None = None, mode: str = "product", metrics: Sequence[str] | None = None,
          workers: int | None = None, progress: bool | None = None, study: str = "sweep") -> Any:
    """Run a study: every point of ``grid`` (field -> values; a product, or ``mode="zip"``) on
    ``workload`` and ``hw``, with ``base`` (field -> value) fixed for every point.

    Fields are spec fields (``"memory.hbm.bandwidth"``), workload parameters (``"batch"``),
    ``"dtype"``, ``"parallel"``, ``"hw"``, ``"workload"`` or runtime options (``"train"``,
    ``"fuse"``, ``"streams"``, ...): ``sim.study.axes``. Points already in ``store`` (an SQLite
    file, created if missing) are not run again; each new one is stored as it finishes.
    ``executor``: ``"local"`` (default, every core), ``"serial"``, ``"dask"``,
    ``"dask://host:port"``, ``"ray"`` or a ``distributed.Client``. Returns a pandas DataFrame.
    A point that fails (out of memory, a layout that does not split) has its message in
    ``error`` and NaN metrics; the others run on.
    """
    p = plan(workload, hw, grid or {}, base=base, mode=mode, study=study, metrics=metrics)
    return table(p, execute(p, store, executor, workers=workers, progress=progress))


STUDY_KEYS = ("name", "description", "workload", "hw", "base", "grid", "zip", "metrics", "store",
              "executor")


def load_study(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A study file as ``sweep`` keyword arguments (plus ``store``/``executor`` when given).

    The file is YAML: ``workload``, ``hw``, ``base`` (field -> value, fixed for every point),
    ``grid`` (field -> values, every combination) or ``zip`` (field -> values, side by side),
    optional ``name``, ``metrics`` (which to keep in the table), ``store`` and ``executor``.
    """
    import yaml

    where = os.fspath(path)
    from sim.io import read_text, safe_load

    text = read_text(where)
    try:
        doc = safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SimError(f"not valid YAML: {problem}", where=where) from None
    if not isinstance(doc, dict):
        raise SimError("a study is a mapping (workload, hw, base, grid or zip, metrics)", where=where)
    unknown = sorted(set(doc) - set(STUDY_KEYS))
    if unknown:
        raise SimError(f"unknown key {unknown[0]!r} (known: {', '.join(STUDY_KEYS)})", where=where)
    if ("grid" in doc) == ("zip" in doc):
        raise SimError("a study has one of 'grid' (every combination) or 'zip' (side by side)", where=where)
    axes = doc.get("grid") or doc.get("zip")
    if not isinstance(axes, dict) or not all(isinstance(v, list) for v in axes.values()):
        raise SimError("grid/zip maps each field to a list of values", where=f"{where}: grid")
    base = doc.get("base") or {}
    if not isinstance(base, dict):
        raise SimError("base maps fields to values", where=f"{where}: base")
    metrics = doc.get("metrics")
    if metrics is not None and not (isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)):
        raise SimError("metrics is a list of metric names", where=f"{where}: metrics")
    out: dict[str, Any] = {
        "workload": doc.get("workload"), "hw": str(doc.get("hw", "h100")), "grid": axes,
        "base": base, "mode": "grid" if "grid" in doc else "zip", "metrics": metrics,
        "study": str(doc.get("name") or os.path.splitext(os.path.basename(where))[0]),
    }
    out["mode"] = "product" if out["mode"] == "grid" else "zip"
    for k in ("store", "executor"):
        if doc.get(k) is not None:
            out[k] = str(doc[k])
    return out


def is_study_file(path: str) -> bool:
    """Whether ``path`` is a study YAML (it has ``grid`` or ``zip``) rather than a workload."""
    import yaml

    if not path.endswith((".yaml", ".yml")) or not os.path.isfile(path):
        return False
    from sim.io import read_text, safe_load

    try:
        doc = safe_load(read_text(path))
    except (yaml.YAMLError, SimError):
        return False
    return isinstance(doc, dict) and ("grid" in doc or "zip" in doc) and "graph" not in doc
