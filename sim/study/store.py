"""The results store: one SQLite file, one row per finished point, keyed by the point's hash.

Why SQLite (docs/tutorial.md has the longer note): it is in the standard library, pandas
(``pd.read_sql``) and DuckDB (``sqlite_scan``) read it directly, and in WAL mode every point is
one small transaction that is on disk the moment ``commit`` returns, so a study killed with
``kill -9`` keeps every point it finished and loses none of them; the primary key on the
configuration hash makes a rerun skip them and makes a duplicate impossible
(``INSERT OR IGNORE``). A Parquet file cannot be appended to row by row without rewriting it
(or leaving one file per point), and DuckDB is an extra dependency holding a file lock.

Table ``points``: ``key`` (primary key), ``study``, ``seq`` (the point's place in its study),
``finished``, ``workload``, ``hw``, ``dtype``, ``parallel``, ``axes`` (a JSON list of the
study's axis names), ``config`` (the JSON configuration), the metric columns of
``sim.study.point.METRICS``, ``error``, ``error_kind``, ``wall_s``, and one column per axis,
named as the axis (added the first time an axis appears).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sim.errors import SimError
from sim.study.point import METRICS

FIXED = ("key", "study", "seq", "finished", "workload", "hw", "dtype", "parallel", "axes", "config",
         *METRICS, "error", "error_kind", "wall_s")
_TYPES = {"key": "TEXT PRIMARY KEY", "seq": "INTEGER", "config": "TEXT", "study": "TEXT",
          "finished": "TEXT", "workload": "TEXT", "hw": "TEXT", "dtype": "TEXT", "parallel": "TEXT",
          "error": "TEXT", "error_kind": "TEXT", "devices": "INTEGER", "axes": "TEXT"}


def _q(name: str) -> str:
    """A quoted SQL identifier (axis names carry dots)."""
    return '"' + name.replace('"', '""') + '"'


class Store:
    """An open results file. ``Store(path)`` creates it (and its table) when missing."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        d = os.path.dirname(self.path)
        if d:
            os.makedirs(d, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            cols = ", ".join(f"{_q(c)} {_TYPES.get(c, 'REAL')}" for c in FIXED)
            self.db.execute(f"CREATE TABLE IF NOT EXISTS points ({cols})")
            self.db.commit()
        except sqlite3.DatabaseError as err:
            raise SimError(f"not a results store ({err})", where=self.path) from None
        self._columns = self._read_columns()

    def _read_columns(self) -> list[str]:
        return [r[1] for r in self.db.execute("PRAGMA table_info(points)")]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def done_keys(self, keys: Iterable[str] | None = None) -> set[str]:
        """Keys already finished (points that crashed rather than failed on input are not done)."""
        rows = self.db.execute("SELECT key FROM points WHERE error_kind IS NULL OR error_kind != 'crash'")
        done = {r[0] for r in rows}
        return done if keys is None else done & set(keys)

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM points").fetchone()[0])

    def rows(self, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts (all of them, or those with ``keys``), in (study, seq) order."""
        cur = self.db.execute("SELECT * FROM points ORDER BY study, seq, key")
        names = [c[0] for c in cur.description]
        out = [dict(zip(names, r)) for r in cur]
        if keys is not None:
            want = set(keys)
            out = [r for r in out if r["key"] in want]
        return out

    # ------------------------------------------------------------------ writing
    def ensure_axes(self, names: Iterable[str]) -> None:
        """Add a column for each axis not yet in the table."""
        for n in names:
            if n not in self._columns:
                self.db.execute(f"ALTER TABLE points ADD COLUMN {_q(n)}")
                self._columns.append(n)
        self.db.commit()

    def add(self, key: str, study: str, seq: int, cfg: Mapping[str, Any], out: Mapping[str, Any]) -> bool:
        """Append one finished point and commit; False if its key was already there.

        A point that crashed earlier (``error_kind == 'crash'``) is replaced."""
        axes = {k: _sql_value(v) for k, v in cfg["axes"].items()}
        extra = {k: _sql_value(v) for k, v in out.items() if k not in FIXED and k not in _TRANSIENT}
        self.ensure_axes([*axes, *extra])
        row: dict[str, Any] = {
            "key": key, "study": study, "seq": seq,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "workload": cfg.get("workload"), "hw": cfg.get("hw"), "dtype": cfg.get("dtype"),
            "parallel": cfg.get("parallel"), "axes": json.dumps(list(cfg["axes"])),
            "config": json.dumps(_public(cfg), sort_keys=True),
            **{m: out.get(m) for m in METRICS},
            "error": out.get("error"), "error_kind": out.get("error_kind"), "wall_s": out.get("wall_s"),
        }
        row.update(extra)  # metrics of other kinds of study (a layout search's step time)
        row.update(axes)  # an axis named like a fixed column (hw, dtype) holds the same value
        names = list(row)
        sql = (f"INSERT OR IGNORE INTO points ({', '.join(_q(n) for n in names)}) "
               f"VALUES ({', '.join('?' for _ in names)})")
        with self.db:
            self.db.execute("DELETE FROM points WHERE key = ? AND error_kind = 'crash'", (key,))
            added = self.db.execute(sql, [row[n] for n in names]).rowcount == 1
        return added


_TRANSIENT = ("pid",)  # worker details not worth a column


def _public(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration without the workload's text (its hash stays)."""
    return {k: v for k, v in cfg.items() if k != "workload_text"}


def _sql_value(v: Any) -> Any:
    """Numbers and text as they are; anything else (lists, booleans kept as 0/1) as JSON text."""
    if v is None or isinstance(v, (int, float, str)):
        return v
    return json.dumps(v)


def read_results(path: str | os.PathLike[str]) -> Any:
    """The store as a pandas DataFrame (every point of every study in it)."""
    import pandas as pd

    if not os.path.exists(path):
        raise SimError("no such results file", where=os.fspath(path))
    with Store(path) as st:
        return pd.DataFrame(st.rows(), columns=st._read_columns())
