"""Sweeps: axis parsing, points against hand counts and against single runs, failing points,
the store (rerun skips, new keys on change, survives ``kill -9``), and executors (local pool
a real Dask LocalCluster and a real local Ray give the same table)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import sim
from sim.cli import main
from sim.errors import SimError
from sim.study import Store, parse_grid, plan, read_results, sweep
from sim.study.axes import classify, split_values
from sim.study.point import METRICS

ROOT = Path(__file__).resolve().parent.parent
SIM = [sys.executable, "-c", "import sys; from sim.cli import main; sys.exit(main())"]


# ------------------------------------------------------------------------------ axes
def test_grid_values_with_units_commas_and_lists():
    g = parse_grid(["memory.hbm.bandwidth=2 TB/s,3.35 TB/s,6.7 TB/s", "batch=1,8,32", "dtype=bf16,fp8",
                    "parallel=dp=8,pp=4,mb=16,tp=2", "topology.shape=[2, 2, 4],[4, 4, 1]",
                    "launch=1,000 ns;2,500 ns", "fuse=true,false"])
    assert g["memory.hbm.bandwidth"] == ["2 TB/s", "3.35 TB/s", "6.7 TB/s"]
    assert g["batch"] == [1, 8, 32]
    assert g["parallel"] == ["dp=8", "pp=4,mb=16", "tp=2"]
    assert g["topology.shape"] == [[2, 2, 4], [4, 4, 1]]
    assert g["launch"] == ["1,000 ns", "2,500 ns"]
    assert g["fuse"] == [True, False]
    assert split_values("[1, 8, 32]") == ["1", "8", "32"]


def test_fields_are_classified():
    params = ["batch", "seq", "d"]
    assert classify("memory.hbm.bandwidth", params).kind == "spec"
    assert classify("seq", params).kind == "param"
    assert classify("param.vocab", params).key == "vocab"
    assert classify("dtype", params).kind == "special"
    assert classify("train", params).kind == "option"
    assert classify("launch", params).kind == "spec"


@pytest.mark.parametrize("item", ["batch", "=1,2", "batch=", "batch=1,,2"])
def test_bad_grid_items(item):
    with pytest.raises(SimError):
        parse_grid([item])


def test_unknown_spec_field_fails_before_running(tmp_path):
    with pytest.raises(SimError, match="memory"):
        plan("gemm", "h100", {"memory.hbm.bandwdth": ["1 TB/s"]})
    with pytest.raises(SimError, match="unit"):
        plan("gemm", "h100", {"memory.hbm.bandwidth": ["3 parsecs"]})


# ------------------------------------------------------------------------------ points
def test_points_match_hand_counts_and_single_runs():
    df = sweep("gemm", hw="h100", grid={"M": [64, 256], "memory.hbm.bandwidth": ["1 TB/s", "4 TB/s"]},
               executor="serial", progress=False)
    assert list(df.columns[:2]) == ["M", "memory.hbm.bandwidth"] and len(df) == 4
    assert set(METRICS) <= set(df.columns) and df["error"].isna().all()
    # a GEMM does 2*M*N*K FLOPs (workloads/gemm.yaml: N=768, K=3072)
    assert (df["flops"] == 2 * df["M"] * 768 * 3072).all()
    for _, row in df.iterrows():
        one = sim.simulate(sim.load("gemm", M=int(row["M"])),
                           sim.hardware("h100", **{"memory.hbm.bandwidth": row["memory.hbm.bandwidth"]}))
        assert row["makespan_s"] == one.makespan_s and row["energy_j"] == one.energy_j
        shares = row[["bound_compute", "bound_memory", "bound_launch", "bound_comm"]]
        assert shares.sum() == pytest.approx(1.0)
    # a quarter of the bandwidth can only be slower
    slow = df[df["memory.hbm.bandwidth"] == "1 TB/s"]["makespan_s"].to_numpy()
    fast = df[df["memory.hbm.bandwidth"] == "4 TB/s"]["makespan_s"].to_numpy()
    assert (slow > fast).all()


def test_failing_points_do_not_stop_the_study():
    df = sweep("mlp-mnist", hw="dgx-h100", grid={"parallel": ["dp=2", "dp=3"],
                                                 "devices.gpu.memory.hbm.capacity": ["80 GiB", "64 KiB"]},
               base={"train": True, "batch": 8}, executor="serial", progress=False)
    by = {(r["parallel"], r["devices.gpu.memory.hbm.capacity"]): r for _, r in df.iterrows()}
    assert pd.isna(by[("dp=2", "80 GiB")]["error"]) and by[("dp=2", "80 GiB")]["makespan_s"] > 0
    assert "does not split" in by[("dp=3", "80 GiB")]["error"]  # 8 samples on 3 replicas
    assert "OutOfMemoryError" in by[("dp=2", "64 KiB")]["error"]
    assert df["makespan_s"].isna().sum() == 3


def test_zip_and_base():
    df = sweep("gemm", grid={"M": [64, 128], "K": [32, 16]}, mode="zip", base={"N": 8},
               executor="serial", progress=False)
    assert list(df["flops"]) == [2 * 64 * 8 * 32, 2 * 128 * 8 * 16]


# ------------------------------------------------------------------------------ store
def test_store_skips_done_points_and_keys_change_with_the_config(tmp_path):
    db = tmp_path / "r.db"
    grid = {"M": [64, 128], "dtype": ["bf16", "fp32"]}
    first = sweep("gemm", grid=grid, store=db, executor="serial", progress=False)
    p = plan("gemm", "h100", grid)
    with Store(db) as st:
        before = {r["key"]: r["finished"] for r in st.rows()}
        assert st.count() == 4 and set(before) == set(p.keys)
    again = sweep("gemm", grid={**grid, "M": [64, 128, 256]}, store=db, executor="serial", progress=False)
    pd.testing.assert_frame_equal(again.iloc[[0, 1, 2, 3]].reset_index(drop=True), first)
    with Store(db) as st:
        rows = {r["key"]: r["finished"] for r in st.rows()}
    assert len(rows) == 6 and all(rows[k] == v for k, v in before.items())
    # a changed spec field is a new key; the same value written another way is not
    k1 = plan("gemm", "h100", {"memory.hbm.bandwidth": ["3.35 TB/s", "3350 GB/s", "3 TB/s"]}).keys
    assert k1[0] == k1[1] != k1[2]
    assert plan("gemm", "h100", {"M": [64]}).keys != plan("gemm", "h200", {"M": [64]}).keys
    df = read_results(db)
    assert len(df) == 6 and {"M", "dtype", "makespan_s", "key", "config"} <= set(df.columns)
    # pandas reads the file directly, without dlsim
    with sqlite3.connect(db) as con:
        assert len(pd.read_sql("SELECT key, makespan_s FROM points", con)) == 6


def test_code_version_is_part_of_the_key(monkeypatch):
    from sim.study import point

    before = plan("gemm", "h100", {"M": [64]}).keys
    monkeypatch.setattr(point, "code_version", lambda: "another-version")
    assert plan("gemm", "h100", {"M": [64]}).keys != before


def _count(db):
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_kill_9_halfway_then_rerun_keeps_every_point_once(tmp_path):
    db = tmp_path / "killed.db"
    cmd = [*SIM, "sweep", "bert-base", "--train", "--grid", "batch=1,2,4,8",
           "--grid", "memory.hbm.bandwidth=1 TB/s,2 TB/s,6.7 TB/s", "--store", str(db),
           "--executor", "local:2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while _count(db) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, mid-study
    proc.wait()
    with sqlite3.connect(db) as con:
        kept = dict(con.execute("SELECT key, finished || wall_s FROM points").fetchall())
    assert 3 <= len(kept) < 12, "the sweep should be killed halfway"
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{12 - len(kept)} simulated, {len(kept)} already in" in rerun.stderr
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT key, finished || wall_s FROM points").fetchall()
        distinct = con.execute("SELECT COUNT(DISTINCT key) FROM points").fetchone()[0]
    assert len(rows) == distinct == 12
    assert all(dict(rows)[k] == v for k, v in kept.items())  # finished points untouched
    grid = parse_grid([cmd[i + 1] for i, a in enumerate(cmd) if a == "--grid"])
    assert set(dict(rows)) == set(plan("bert-base", "h100", grid, base={"train": True}).keys)


# ------------------------------------------------------------------------------ executors
GRID = {"batch": [1, 16], "dtype": ["bf16", "fp32"], "memory.hbm.bandwidth": ["2 TB/s", "6.7 TB/s"]}


@pytest.mark.slow
def test_local_pool_and_dask_local_cluster_give_the_serial_table(tmp_path):
    serial = sweep("bert-base", grid=GRID, executor="serial", progress=False)
    pool = sweep("bert-base", grid=GRID, executor="local:2", progress=False)
    pd.testing.assert_frame_equal(pool, serial)
    assert (serial["throughput_per_s"] == serial["batch"] / serial["makespan_s"]).all()
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        address = "dask://" + cluster.scheduler_address.split("://", 1)[1]  # as --executor dask://host:port
        dask = sweep("bert-base", grid=GRID, executor=address, store=tmp_path / "d.db", progress=False)
        assert len(client.scheduler_info()["workers"]) == 2
        # every point ran as a task on the cluster (the scheduler counted them into memory)
        ran = client.run_on_scheduler(lambda dask_scheduler: dict(
            dask_scheduler.task_prefixes["run_point"].state_counts))
        assert ran["memory"] == len(serial)
    pd.testing.assert_frame_equal(dask, serial)
    assert len(read_results(tmp_path / "d.db")) == len(serial)


def test_cli_sweep_and_results(tmp_path, capsys):
    db = tmp_path / "c.db"
    assert main(["sweep", "gemm", "--grid", "M=64,128", "--grid", "memory.hbm.bandwidth=2 TB/s,4 TB/s",
                 "--store", str(db), "--executor", "serial", "--csv", str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr()
    assert "makespan (ms)" in out.out and "4 points, 0 failed; 4 simulated, 0 already in" in out.err
    assert "pt/s" not in out.err  # no progress bar when stderr is not a terminal
    assert main(["sweep", "gemm", "--grid", "M=16,32", "--executor", "serial", "--progress"]) == 0
    assert "2/2" in capsys.readouterr().err  # asked for: the bar, with its count
    assert len(pd.read_csv(tmp_path / "c.csv")) == 4
    assert main(["results", str(db), "--sort", "makespan_s"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["M", "memory.hbm.bandwidth"] and "4 points" in lines[-1]


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["sweep", "gemm", "--grid", "memory.hbm.bandwidth=fast", "--executor", "serial"]) == 2
    assert main(["sweep", "gemm", "--grid", "M=1", "--executor", "warp-drive"]) == 2
    assert main(["results", str(tmp_path / "none.db")]) == 2
    (tmp_path / "junk.db").write_text("not a database " * 100)
    assert main(["results", str(tmp_path / "junk.db")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(e.startswith("sim: error: ") for e in err)


def test_study_file(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text("name: gemm-bw\nworkload: gemm\nhw: h100\nbase: {N: 64}\n"
                     "zip:\n  M: [16, 32]\n  memory.hbm.bandwidth: [2 TB/s, 4 TB/s]\n"
                     "metrics: [makespan_s, flops]\n")
    assert main(["sweep", str(study), "--store", str(tmp_path / "s.db"), "--executor", "serial"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "work (GFLOP)" in out[0] and len(out) == 3
    df = read_results(tmp_path / "s.db")
    assert set(df["study"]) == {"gemm-bw"}
    assert sorted(df["flops"]) == [2 * 16 * 64 * 3072, 2 * 32 * 64 * 3072]


def test_cluster_layouts_are_an_axis():
    from sim.cluster import simulate_training

    layouts = ["tp=2,pp=2,dp=2", "tp=4,pp=1,dp=2,schedule=1f1b", "tp=8,pp=1,dp=1"]
    df = sweep("gpt2", hw="dgx-a100", grid={"parallel": layouts}, base={"train": True, "batch": 16},
               executor="serial", progress=False)
    assert "does not divide the 12 attention heads" in df["error"].iloc[2]
    for _, row in df.iloc[:2].iterrows():
        direct = simulate_training("gpt2", sim.hardware("dgx-a100"), row["parallel"], batch=16,
                                   progress=False)
        assert row["makespan_s"] == direct.makespan_s and row["devices"] == 8
        assert row["throughput_per_s"] == pytest.approx(16 / direct.makespan_s)
        assert row["peak_memory_per_device_bytes"] == max(m.total for m in direct.memory)


@pytest.mark.slow
def test_ray_gives_the_serial_table(tmp_path):
    """A real local Ray (two CPUs) runs every point as a task and gives the serial table."""
    grid = {"M": [64, 128], "dtype": ["bf16", "fp32"]}
    serial = sweep("gemm", grid=grid, executor="serial", progress=False)
    ray_table = sweep("gemm", grid=grid, executor="ray", store=tmp_path / "r.db", progress=False)
    pd.testing.assert_frame_equal(ray_table, serial)
    assert len(read_results(tmp_path / "r.db")) == len(serial)
