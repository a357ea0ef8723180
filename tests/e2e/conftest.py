"""tests/e2e runs only with `BJC_E2E=1` (set by `nox -s e2e`); the default `pytest`
run does not even collect it. Its fixtures (the real control plane) are in
tests/conftest.py, shared with the integration scenarios that run on both clusters.
"""

from __future__ import annotations

import os

if os.environ.get("BJC_E2E") != "1":
    collect_ignore_glob = ["test_*.py"]
