"""Typed ``arch`` blocks: one dataclass per kind, defaults in the schema, unknown keys refused."""

from pathlib import Path

import pytest
import yaml

from sim.cli import main
from sim.cost import op_cost
from sim.errors import SpecError
from sim.hw import DeviceSpec, load_hardware
from sim.hw.arch import ARCH_CLASSES, Arch, AsicArch, CpuArch, FpgaArch, GpuArch, TpuArch, markdown_table
from sim.hw.loader import SPEC_DIR
from sim.hw.schema import ARCH_READERS
from sim.ops.work import GemmShape, Work

DOCS = Path(__file__).resolve().parents[1] / "docs" / "hardware.md"


@pytest.mark.parametrize("name, cls", [("h100", GpuArch), ("mi300x", GpuArch), ("tpu-v4", TpuArch),
                                       ("systolic-asic", AsicArch), ("xeon-8480", CpuArch),
                                       ("alveo-u250", FpgaArch)])
def test_each_kind_loads_its_class(name, cls):
    d = load_hardware(name)
    assert isinstance(d, DeviceSpec) and type(d.arch) is cls


def test_yaml_values_become_attributes():
    # hwspecs/h100.yaml: 132 SMs at 1.98 GHz (NVIDIA H100 SXM5 whitepaper, boost clock)
    a = load_hardware("h100").arch
    assert isinstance(a, GpuArch)
    assert a.sms == 132 and a.clock == pytest.approx(1.98e9)
    t = load_hardware("tpu-v4").arch
    assert isinstance(t, TpuArch) and (t.arrays, t.rows, t.cols) == (t.mxus, 128, 128)


def test_every_field_has_a_known_reader_and_a_doc():
    for cls in (Arch, *ARCH_CLASSES.values()):
        for f in cls.spec_fields():
            assert f.metadata["reader"] in ARCH_READERS, (cls.__name__, f.name)
            assert f.metadata["doc"].strip()


def test_docs_table_is_current():
    assert markdown_table() in DOCS.read_text(encoding="utf-8")


def _h100_without(tmp_path: Path, *keys: str) -> Path:
    raw = yaml.safe_load((SPEC_DIR / "h100.yaml").read_text())
    for k in keys:
        raw["arch"].pop(k, None)
    p = tmp_path / "gpu.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_absent_optional_fields_take_the_documented_defaults(tmp_path):
    # docs/hardware.md: split_k_min 256, sm_load_bytes_per_cycle 64, row tiles 128x128
    bare = load_hardware(str(_h100_without(tmp_path, "split_k_min", "sm_load_bytes_per_cycle", "tiles")))
    assert isinstance(bare, DeviceSpec) and isinstance(bare.arch, GpuArch)
    assert (bare.arch.split_k_min, bare.arch.sm_load_bytes_per_cycle) == (256, 64.0)
    assert bare.arch.tiles_for("tensor") == ((128, 128),)
    explicit = load_hardware(str(_h100_without(tmp_path, "tiles")), **{
        "arch.split_k_min": 256, "arch.sm_load_bytes_per_cycle": 64, "arch.tiles.tensor": [[128, 128]]})
    assert isinstance(explicit, DeviceSpec)
    w = Work(flops=2 * 96 * 4096 * 4096, matmul_flops=2 * 96 * 4096 * 4096,
             bytes_read=2 * (96 * 4096 + 4096 * 4096), bytes_written=2 * 96 * 4096,
             gemms=(GemmShape(96, 4096, 4096),))
    assert op_cost(w, bare, "bf16").time_s == op_cost(w, explicit, "bf16").time_s


@pytest.mark.parametrize("spec, key", [("h100", "smz"), ("tpu-v4", "mxu_row"), ("systolic-asic", "rowz"),
                                       ("xeon-8480", "cors"), ("alveo-u250", "dsp")])
def test_unknown_arch_key_is_an_error_naming_file_and_field(tmp_path, spec, key):
    raw = yaml.safe_load((SPEC_DIR / f"{spec}.yaml").read_text())
    raw["arch"][key] = 1
    p = tmp_path / f"{spec}.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as e:
        load_hardware(str(p))
    assert e.value.where == f"{p}: arch.{key}" and "unknown key" in e.value.message


def test_missing_required_field_is_an_error(tmp_path):
    p = _h100_without(tmp_path, "sms")
    with pytest.raises(SpecError) as e:
        load_hardware(str(p))
    assert e.value.where == f"{p}: arch.sms"


def test_cli_exits_2_with_one_line_on_a_misspelt_arch_key(tmp_path, capsys):
    model = tmp_path / "m.yaml"
    model.write_text("name: m\ninputs: {x: [4, 8]}\nlayers:\n  - {type: linear, out: 8}\n")
    assert main(["run", str(model), "--hw", "h100", "--hw-set", "arch.sm_count=100"]) == 2
    err = capsys.readouterr().err.strip()
    # the option is to blame, not the bundled spec it was applied to
    assert len(err.splitlines()) == 1 and "--hw-set arch.sm_count" in err and "h100.yaml" not in err


def test_hw_set_changes_an_arch_field_the_cost_reads():
    # an SFU-bound op: 1e9 transcendentals at 16 per SM per clock (H100 whitepaper), 1.98 GHz
    w = Work(flops=1.0, bytes_read=4, bytes_written=4, transcendentals=1e9)
    for sms in (132, 66):
        d = load_hardware("h100", **{"arch.sms": sms})
        assert isinstance(d, DeviceSpec) and isinstance(d.arch, GpuArch) and d.arch.sms == sms
        assert op_cost(w, d, "fp32").compute_s == pytest.approx(1e9 / (16 * sms * 1.98e9), rel=1e-9)


def test_host_dispatch_is_allowed_on_every_kind():
    for name in ("h100", "tpu-v4", "systolic-asic", "xeon-8480", "alveo-u250"):
        d = load_hardware(name, **{"arch.host_dispatch": "4 us"})
        assert isinstance(d, DeviceSpec) and d.arch.host_dispatch == pytest.approx(4e-6)
        d = load_hardware(name, **{"arch.host_dispatch": 4e-6})  # a plain number: SI seconds
        assert isinstance(d, DeviceSpec) and d.arch.host_dispatch == pytest.approx(4e-6)


def test_a_device_refuses_another_kinds_arch():
    from sim.hw.spec import ComputeUnit, MemoryLevel
    with pytest.raises(SpecError, match="GpuArch"):
        DeviceSpec(name="x", kind="gpu", units=(ComputeUnit("c", True, {"fp32": 1.0}),),
                   memory=(MemoryLevel("m", 1.0, 1.0),), arch=CpuArch(cores=1, clock=1.0))
