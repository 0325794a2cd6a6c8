"""Hardware specs: YAML with units -> frozen device and system dataclasses.

>>> from sim.hw import load_hardware, list_hardware
>>> "h100" in list_hardware()
True
"""

from sim.hw.arch import Arch, AsicArch, CpuArch, FpgaArch, GpuArch, TpuArch
from sim.hw.loader import describe, list_hardware, load_hardware, override
from sim.hw.spec import ComputeUnit, DeviceSpec, LinkSpec, MemoryLevel, PowerSpec, SystemSpec
from sim.hw.units import parse_quantity

__all__ = [
    "Arch", "AsicArch", "CpuArch", "FpgaArch", "GpuArch", "TpuArch",
    "ComputeUnit", "DeviceSpec", "LinkSpec", "MemoryLevel", "PowerSpec", "SystemSpec", "describe",
    "list_hardware", "load_hardware", "override", "parse_quantity",
]
