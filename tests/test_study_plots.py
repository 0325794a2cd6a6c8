"""Study plots: the Pareto front against brute force, unit-aware axes, and the files
``sim plot`` writes (PNG and SVG, titled, axes labelled with units)."""

import itertools
import random

import pytest

from sim.cli import main
from sim.study import sweep
from sim.study.plots import numeric_axis, pareto_front


def test_pareto_front_matches_brute_force():
    rng = random.Random(7)
    for _ in range(50):
        pts = [(rng.randint(0, 20), rng.randint(0, 20)) for _ in range(rng.randint(1, 30))]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        dominated = {i for i, j in itertools.permutations(range(len(pts)), 2)
                     if xs[j] <= xs[i] and ys[j] <= ys[i] and (xs[j], ys[j]) != (xs[i], ys[i])}
        front = pareto_front(xs, ys)
        assert {pts[i] for i in front} == {pts[i] for i in range(len(pts)) if i not in dominated}
        assert len(front) == len({pts[i] for i in front})  # ties on both coordinates counted once


def test_quantities_become_numbers_in_one_unit():
    assert numeric_axis(["500 GB/s", "2 TB/s"]) == ([500.0, 2000.0], "GB/s")  # the first value's unit
    assert numeric_axis(["40 MiB", "80 MiB"]) == ([40.0, 80.0], "MiB")
    assert numeric_axis(["1 TB/s", "80 GiB"]) == (None, "")  # two kinds: not one axis
    assert numeric_axis(["dp=2", "pp=2"]) == (None, "")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = tmp_path_factory.mktemp("plots") / "r.db"
    sweep("mlp-mnist", grid={"memory.hbm.bandwidth": ["1 TB/s", "2 TB/s", "4 TB/s"], "batch": [1, 16, 64]},
          store=db, executor="serial", progress=False)
    return db


@pytest.mark.parametrize("args,labels", [
    (["--x", "memory.hbm.bandwidth", "--hue", "batch"],
     ["memory.hbm.bandwidth (TB/s)", "makespan (ms)", "makespan vs memory.hbm.bandwidth"]),
    (["--kind", "heatmap", "--x", "batch", "--hue", "memory.hbm.bandwidth", "--y", "energy_j"],
     ["energy (J)", "batch", "memory.hbm.bandwidth"]),
    (["--kind", "pareto"], ["time per sample (ms)", "energy per sample (mJ)", "Pareto front"]),
])
def test_sim_plot_writes_labelled_png_and_svg(store, tmp_path, capsys, args, labels):
    out = tmp_path / "fig.png"
    assert main(["plot", str(store), *args, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "fig.svg").read_text()
    for text in labels:
        assert text in svg
    assert capsys.readouterr().out.count("wrote plot") == 2


def test_sim_plot_refuses_what_it_cannot_draw(store, tmp_path, capsys):
    # a heatmap over one axis while another varies has several points per cell
    assert main(["plot", str(store), "--kind", "heatmap", "--x", "batch", "--hue", "batch",
                 "--out", str(tmp_path / "h.png")]) == 2
    assert main(["plot", str(store), "--x", "nosuch", "--out", str(tmp_path / "n.png")]) == 2
    assert main(["plot", str(store), "--x", "batch", "--where", "batch=3",
                 "--out", str(tmp_path / "w.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("sim: error: ") for e in err)
