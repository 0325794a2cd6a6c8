"""sim.cost.fit: least-squares fitting of spec parameters and family-wise cross-validation."""

import numpy as np
import pytest

from sim.cost.fit import Param, Point, Stage, cross_validate, fit, folds_by_family, summarize


def _roofline(v, pts):
    """A launch floor plus bytes over a bandwidth: the shape of a streaming kernel's time."""
    return np.array([v["launch"] + p.data / v["bw"] for p in pts])


def _points(launch=5e-6, bw=3e12):
    sizes = [1e5, 1e6, 1e7, 1e8, 1e9, 3e5, 3e6, 3e7, 3e8, 3e9]
    return [Point(launch + s / bw, "copy", f"f{i % 5}", s) for i, s in enumerate(sizes)]


PARAMS = (Param("launch", 1e-6, 0.0, 1e-4), Param("bw", 1e12, 1e11, 1e13))


def test_fit_recovers_the_parameters_that_generated_the_times():
    vals = fit(_roofline, [Stage(PARAMS)], _points())
    assert vals["launch"] == pytest.approx(5e-6, rel=1e-3)
    assert vals["bw"] == pytest.approx(3e12, rel=1e-3)


def test_stages_fit_on_their_own_points_with_earlier_values_held():
    pts = _points()
    stages = [Stage((PARAMS[0],), select=lambda p: p.data < 1e6),  # floor from the small ones
              Stage((PARAMS[1],), select=lambda p: p.data >= 1e6)]
    vals = fit(_roofline, stages, pts, fixed={"bw": 3e12})
    assert vals["launch"] == pytest.approx(5e-6, rel=1e-2)
    assert vals["bw"] == pytest.approx(3e12, rel=1e-3)


def test_one_outlier_does_not_drag_the_fit():
    pts = _points()
    pts[4] = Point(pts[4].measured_s * 1.5, "copy", pts[4].family, pts[4].data)  # throttled run
    vals = fit(_roofline, [Stage(PARAMS)], pts)
    assert vals["bw"] == pytest.approx(3e12, rel=0.05)


def test_families_are_held_out_whole_and_cross_validation_predicts_unseen_points():
    pts = _points()
    folds = folds_by_family(pts, 5)
    for p, f in zip(pts, folds):
        assert all(g == f for q, g in zip(pts, folds) if q.family == p.family)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    pred = cross_validate(_roofline, [Stage(PARAMS)], pts, k=5)
    table = summarize(pred, pts)
    assert table["copy"].n == 10 and table["all"].median < 0.1  # exact model: held out ~exact
    # a model missing the floor cannot predict the small held-out sizes
    bad = cross_validate(lambda v, ps: np.array([p.data / v["bw"] for p in ps]),
                         [Stage((PARAMS[1],))], pts, k=5)
    assert summarize(bad, pts)["copy"].worst > 50
