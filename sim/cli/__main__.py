"""``python -m sim.cli``: the ``sim`` command."""

import sys

from sim.cli import main

sys.exit(main())
