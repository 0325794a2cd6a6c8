"""Calibrate a CPU spec on this machine from the executor's own kernels (``sim calibrate``),
and check it against whole networks executed for real (``sim validate``)."""
