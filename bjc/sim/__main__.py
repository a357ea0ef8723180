"""`python -m bjc.sim ...`: the same as `bjc sim ...`."""

import sys

from bjc.sim.cli import main

raise SystemExit(main(sys.argv[1:]))
