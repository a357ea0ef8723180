"""A `bjc` command on PATH for job scripts under test, as a job image provides it.

It runs this checkout with the standard library only (`python -S`: no site-packages),
the way the example job image installs bjc without its dependencies, so a job script
that works here needs nothing but Python in its image.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def path_with_bjc(directory: Path) -> str:
    """A PATH value whose first entry holds a `bjc` command; the shim lives in `directory`."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "bjc"
    shim.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(REPO))} "
        f'exec {shlex.quote(sys.executable)} -S -m bjc "$@"\n'
    )
    shim.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
