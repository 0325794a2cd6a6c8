"""Reports: the ``Result`` record set, JSON, Chrome traces, text summaries and plots."""

from sim.report.record import OpRecord
from sim.report.result import Result, build_result

__all__ = ["OpRecord", "Result", "build_result"]
