"""Spec files: every bundled spec loads, overrides, systems, and bad specs name file and field."""

from pathlib import Path

import pytest
import yaml

from sim.errors import SpecError
from sim.hw import DeviceSpec, SystemSpec, describe, list_hardware, load_hardware, override
from sim.hw.loader import SPEC_DIR
from sim.hw.spec import ClusterSpec

BUNDLED = ["xeon-8480", "epyc-9654", "v100", "a100", "h100", "h200", "mi300x", "tpu-v4", "tpu-v5e",
           "alveo-u250", "alveo-u280", "dgx-h100", "tpu-v4-slice"]


def test_bundled_list():
    assert set(BUNDLED) <= set(list_hardware())


@pytest.mark.parametrize("name", sorted(set(BUNDLED) | set(list_hardware())))
def test_every_bundled_spec_loads(name):
    spec = load_hardware(name)
    assert spec.name == name
    assert describe(spec)
    if isinstance(spec, ClusterSpec):
        spec = spec.node
    devices = spec.devices.values() if isinstance(spec, SystemSpec) else [spec]
    for d in devices:
        assert d.memory and d.units
        assert all(lv.bandwidth_Bps > 0 and lv.capacity_bytes > 0 for lv in d.memory)
        assert all(0 < lv.efficiency <= 1 for lv in d.memory)
        assert all(any(v > 0 for v in u.peak_flops.values()) for u in d.units)
        assert d.power.tdp_w > d.power.idle_w >= 0


def test_every_number_has_a_source_comment():
    for path in SPEC_DIR.glob("*.yaml"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            body = line.split("#")[0]
            key = body.split(":", 1)[0].strip().lstrip("- ")
            if key in ("version", "name", "description", "spec", "kind"):
                continue
            if any(c.isdigit() for c in body.split(":", 1)[-1]) and ":" in body:
                # a value line with a number: it or its block header carries a comment
                assert "#" in line or body.strip().endswith(":") or body.strip().startswith("- ") or \
                    _block_commented(path, i), f"{path.name}:{i} has no source comment"


def _block_commented(path: Path, lineno: int) -> bool:
    """True if the nearest less-indented header line above carries a comment."""
    lines = path.read_text().splitlines()
    indent = len(lines[lineno - 1]) - len(lines[lineno - 1].lstrip())
    for j in range(lineno - 2, -1, -1):
        ln = lines[j]
        if ln.strip() and len(ln) - len(ln.lstrip()) < indent:
            return "#" in ln
    return False


def test_h100_datasheet_numbers():
    h = load_hardware("h100")
    assert isinstance(h, DeviceSpec) and h.kind == "gpu"
    assert h.main_memory.name == "hbm"
    assert h.main_memory.bandwidth_Bps == 3.35e12
    assert h.main_memory.capacity_bytes == pytest.approx(79.18 * 2**30)  # torch total_memory, calibration
    assert h.unit("tensor").peak_flops["bf16"] == pytest.approx(989.4e12)
    assert h.unit("tensor").sparse_2_4
    assert h.power.tdp_w == 700
    assert h.arch.sms == 132
    assert h.host_link is not None and h.host_link.bandwidth_Bps == 64e9


def test_derived_peaks():
    x = load_hardware("xeon-8480")
    assert isinstance(x, DeviceSpec)
    # cores x (16 fp32 lanes x 2 FMA x 2 FLOP) x clock
    assert x.unit("simd").peak_flops["fp32"] == pytest.approx(56 * 64 * 2.0e9)
    u = load_hardware("alveo-u250")
    assert isinstance(u, DeviceSpec)
    assert u.unit("dsp").peak_flops["int8"] == pytest.approx(12288 * 2 * 2 * 300e6)
    assert u.unit("dsp").rate("int8") == pytest.approx(12288 * 2 * 2 * 300e6 * 0.7)


def test_override_what_if():
    h = load_hardware("h100")
    h2 = override(h, {"memory.hbm.bandwidth": "6.7 TB/s", "units.tensor.peak.bf16": "2 PFLOPS",
                      "launch": "1 us", "arch.sms": 100})
    assert isinstance(h2, DeviceSpec)
    assert h2.main_memory.bandwidth_Bps == 6.7e12
    assert h2.unit("tensor").peak_flops["bf16"] == 2e15
    assert h2.launch_s == 1e-6
    assert h2.arch.sms == 100
    assert h.main_memory.bandwidth_Bps == 3.35e12  # the original is untouched
    # the outermost level by field name, SI numbers, and the keyword form of load_hardware
    h3 = override(h, {"memory.bandwidth": 4e12})
    assert isinstance(h3, DeviceSpec) and h3.main_memory.bandwidth_Bps == 4e12
    h4 = load_hardware("h100", **{"memory.hbm.capacity": "96 GB"})
    assert isinstance(h4, DeviceSpec) and h4.main_memory.capacity_bytes == 96e9
    # overrides compose
    h5 = override(h2, {"power.tdp": "500 W"})
    assert isinstance(h5, DeviceSpec) and h5.power.tdp_w == 500 and h5.main_memory.bandwidth_Bps == 6.7e12


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"memory.hbm.bandwdith": "6.7 TB/s"}, "memory.hbm.bandwdith"),
        ({"memory.hmb.bandwidth": "6.7 TB/s"}, "memory.hmb.bandwidth"),
        ({"units.tensor.peak.bf17": "1 PFLOPS"}, "units.tensor.peak.bf17"),
        ({"memory.hbm.bandwidth": "6.7 TB"}, "memory.hbm.bandwidth"),
        ({"arch.smz": 3}, "arch.smz"),
    ],
)
def test_bad_override_is_spec_error(changes, field):
    with pytest.raises(SpecError) as e:
        override(load_hardware("h100"), changes)
    # the override is to blame, not the bundled file it was applied to
    assert e.value.where == f"--hw-set {field}"


def test_dgx_system():
    s = load_hardware("dgx-h100")
    assert isinstance(s, SystemSpec)
    assert s.accelerators == [f"gpu{i}" for i in range(8)]
    assert s.host == "host"
    assert s.devices["gpu3"].name == "h100"
    assert s.switch is not None and s.switch.bandwidth_Bps == 450e9
    pcie = [(a, b) for a, b, lk in s.links if lk.name.startswith("pcie")]
    assert sorted(pcie) == sorted(("host", f"gpu{i}") for i in range(8))
    host = s.devices["host"]
    one = load_hardware("xeon-8480")
    assert isinstance(one, DeviceSpec)
    assert host.unit("simd").peak_flops["fp32"] == pytest.approx(2 * one.unit("simd").peak_flops["fp32"])
    assert host.main_memory.bandwidth_Bps == pytest.approx(2 * one.main_memory.bandwidth_Bps)
    s2 = override(s, {"devices.gpu.memory.hbm.bandwidth": "4 TB/s", "devices.gpu.count": 4})
    assert isinstance(s2, SystemSpec)
    assert s2.accelerators == ["gpu0", "gpu1", "gpu2", "gpu3"]
    assert s2.devices["gpu0"].main_memory.bandwidth_Bps == 4e12


def test_tpu_torus():
    s = load_hardware("tpu-v4-slice")
    assert isinstance(s, SystemSpec)
    assert len(s.devices) == 8 and s.host is None
    assert len(s.links) == 12  # the edges of a 2x2x2 cube
    for inst in s.devices:
        assert sum(inst in (a, b) for a, b, _ in s.links) == 3
    big = override(s, {"topology.shape": [4, 2, 1], "devices.tpu.count": 8})
    assert isinstance(big, SystemSpec)
    # 4-ring (4 links) x 2 + 4 pairs across the size-2 dimension
    assert len(big.links) == 4 * 2 + 4


def _write(tmp_path, name, data):
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _hbm(key, value):
    return lambda d: d["memory"][0].__setitem__(key, value)


def _base():
    return yaml.safe_load((SPEC_DIR / "h100.yaml").read_text())


@pytest.mark.parametrize(
    "mutate, field, fragment",
    [
        (_hbm("bandwdith", "3 TB/s"), "memory.hbm.bandwdith", "unknown key"),
        (_hbm("bandwidth", "3.35 TB"), "memory.hbm.bandwidth", "is a size"),
        (_hbm("bandwidth", "-3.35 TB/s"), "memory.hbm.bandwidth", "negative"),
        (_hbm("bandwidth", "3.35 TQ/s"), "memory.hbm.bandwidth", "unknown unit"),
        (_hbm("bandwidth", "0 TB/s"), "memory.hbm.bandwidth", "> 0"),
        (lambda d: d["units"][0]["peak"].__setitem__("bf16", "9 TB/s"), "units.tensor.peak.bf16", "compute"),
        (lambda d: d["units"][0]["efficiency"].update(bf16=1.5), "units.tensor.efficiency.bf16", "<="),
        (lambda d: d.__setitem__("lanch", "5 us"), "lanch", "unknown key"),
        (lambda d: d["arch"].__setitem__("sms", -4), "arch.sms", ">= 0"),
        (lambda d: d.__setitem__("kind", "npu"), "kind", "unknown device kind"),
        (lambda d: d.pop("version"), "version", "missing version"),
        (lambda d: d.__setitem__("version", 7), "version", "unsupported version"),
        (lambda d: d["power"].__setitem__("tdp", "700 J"), "power.tdp", "is an energy"),
        (lambda d: d["host_link"].pop("bandwidth"), "host_link.bandwidth", "missing"),
        (lambda d: d["arch"]["tiles"].update(tensr=[[64, 64]]), "arch.tiles.tensr", "no compute unit"),
        (lambda d: d["units"][1].update(name="tensor"), "units", "names repeat"),
    ],
)
def test_bad_spec_names_file_and_field(tmp_path, mutate, field, fragment):
    data = _base()
    mutate(data)
    path = _write(tmp_path, "bad", data)
    with pytest.raises(SpecError) as e:
        load_hardware(str(path))
    assert e.value.where == f"{path}: {field}", e.value.where
    assert fragment in e.value.message
    assert "\n" not in str(e.value)


def test_unknown_name_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError) as e:
        load_hardware("h1000")
    assert "h100" in str(e.value)  # lists the bundled names
    p = tmp_path / "broken.yaml"
    p.write_text("version: 1\nkind: gpu\n  bad: [indent\n")
    with pytest.raises(SpecError) as e2:
        load_hardware(str(p))
    assert str(p) in str(e2.value)


@pytest.mark.parametrize("name", ["xeon-8480", "epyc-9654"])
def test_cpu_simd_peak_matches_width_fma_and_clock(name):
    c = load_hardware(name)
    assert isinstance(c, DeviceSpec)
    a = c.arch
    lanes = a.simd_bits // 32
    per_core = lanes * a.fma_units * 2  # FMA = 2 FLOP
    if name == "epyc-9654":
        per_core //= 2  # Zen 4 runs 512-bit ops on 256-bit pipes: half the 512-bit lanes per cycle
    assert c.unit("simd").peak_flops["fp32"] == pytest.approx(a.cores * per_core * a.clock)


@pytest.mark.parametrize("name", ["tpu-v4", "tpu-v5e", "systolic-asic"])
def test_systolic_peak_matches_array_geometry(name):
    d = load_hardware(name)
    assert isinstance(d, DeviceSpec)
    a = d.arch
    if d.kind == "tpu":
        arrays, rows, cols = a.mxus, a.mxu_rows, a.mxu_cols
    else:
        arrays, rows, cols = a.arrays, a.rows, a.cols
    matrix = next(u for u in d.units if u.matrix)
    assert matrix.peak_flops["bf16"] == pytest.approx(arrays * rows * cols * 2 * a.clock, rel=0.01)


def test_user_system_with_device_file_beside_it(tmp_path):
    dev_data = _base()
    dev_data["name"] = "my-gpu"
    dev_data["memory"][0]["bandwidth"] = "5 TB/s"
    _write(tmp_path, "my-gpu", dev_data)
    sys_path = _write(tmp_path, "pair", {
        "version": 1, "kind": "system", "name": "pair",
        "devices": {"gpu": {"spec": "my-gpu.yaml", "count": 2}},
        "links": [{"a": "gpu0", "b": "gpu1", "link": {"name": "nvlink", "bandwidth": "450 GB/s"}}],
    })
    s = load_hardware(str(sys_path))
    assert isinstance(s, SystemSpec)
    assert s.devices["gpu1"].main_memory.bandwidth_Bps == 5e12
    assert len(s.links) == 1
    bad = _write(tmp_path, "bad-sys", {"version": 1, "kind": "system",
                                       "devices": {"gpu": {"spec": "no-such-gpu", "count": 2}}})
    with pytest.raises(SpecError) as e:
        load_hardware(str(bad))
    assert e.value.where == f"{bad}: devices.gpu.spec"
