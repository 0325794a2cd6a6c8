"""Unit parsing: human strings -> SI, with the kind of quantity checked."""

import pytest

from sim.errors import SpecError
from sim.hw.units import format_quantity, parse_number, parse_quantity, parse_unit


@pytest.mark.parametrize(
    "text, kind, expected",
    [
        ("3.35 TB/s", "bandwidth", 3.35e12),
        ("64 GB/s", "bandwidth", 64e9),
        ("2400 Gbps", "bandwidth", 300e9),
        ("100 Gb/s", "bandwidth", 12.5e9),
        ("1 GiB/s", "bandwidth", 2**30),
        ("989 TFLOPS", "compute", 989e12),
        ("989.4 TFLOP/s", "compute", 989.4e12),
        ("1979 TOPS", "compute", 1979e12),
        ("50 MiB", "size", 50 * 2**20),
        ("80 GB", "size", 80e9),
        ("80 GiB", "size", 80 * 2**30),
        ("48 KiB", "size", 48 * 1024),
        ("54 Mb", "size", 54e6 / 8),
        ("700 W", "power", 700.0),
        ("1.98 GHz", "frequency", 1.98e9),
        ("300 MHz", "frequency", 3e8),
        ("2 us", "time", 2e-6),
        ("2 µs", "time", 2e-6),
        ("1.5 ms", "time", 1.5e-3),
        ("10 ns", "time", 1e-8),
        ("0 us", "time", 0.0),
        ("0.5 pJ", "energy", 0.5e-12),
        ("0.5 pJ/FLOP", "energy", 0.5e-12),
        ("31 pJ/B", "energy_per_byte", 31e-12),
        ("3.9 pJ/bit", "energy_per_byte", 3.9e-12 * 8),
        ("1e3 GB", "size", 1e12),
    ],
)
def test_good_quantities(text, kind, expected):
    assert parse_quantity(text, kind) == pytest.approx(expected, rel=1e-12)


def test_decimal_and_binary_prefixes_are_exact():
    assert parse_quantity("1 GB", "size") == 1e9
    assert parse_quantity("1 GiB", "size") == 2**30
    assert parse_quantity("1 TB", "size") == 1e12
    assert parse_quantity("1 TiB", "size") == 2**40
    assert parse_unit("MiB") == ("size", 2.0**20)


@pytest.mark.parametrize(
    "value, kind, fragment",
    [
        ("3.35 TB", "bandwidth", "is a size, expected a bandwidth"),
        ("700 W", "compute", "is a power"),
        ("1.98 GHz", "time", "is a frequency"),
        ("3 furlongs", "size", "unknown unit"),
        ("5 XB/s", "bandwidth", "unknown unit"),
        ("-1 GB/s", "bandwidth", "negative"),
        ("-2 us", "time", "negative"),
        ("", "size", "missing"),
        (None, "size", "missing"),
        ("80", "size", "no unit"),
        (80, "size", "no unit"),
        ("GB", "size", "cannot read"),
        ("1 mB", "size", "unknown unit"),  # milli-bytes is not a size anyone means
    ],
)
def test_bad_quantities(value, kind, fragment):
    with pytest.raises(SpecError) as e:
        parse_quantity(value, kind, where="x.yaml: memory.hbm.bandwidth")
    assert fragment in str(e.value)
    assert e.value.where == "x.yaml: memory.hbm.bandwidth"
    assert "\n" not in str(e.value)


def test_plain_numbers():
    assert parse_number(0.9, maximum=1.0) == 0.9
    assert parse_number(132, integer=True) == 132
    for bad in (-1, 1.5, "3", True, float("nan")):
        with pytest.raises(SpecError):
            parse_number(bad, integer=True, maximum=100)


def test_format_round_trip():
    for kind, v in [("bandwidth", 3.35e12), ("compute", 989.4e12), ("size", 80e9), ("time", 2e-6)]:
        assert parse_quantity(format_quantity(v, kind), kind) == pytest.approx(v, rel=1e-3)
