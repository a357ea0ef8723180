"""`bjc run`, listening on POD_IP only: what a pod's own network namespace gives it.

Controller replicas of the reliability scenarios share one host, each with its own
loopback address (127.0.0.2, 127.0.0.3, ...) as POD_IP, and the same ports from
one ConfigMap. `bjc run` listens on every interface unless BIND_ADDRESS names one,
so this wrapper sets BIND_ADDRESS to POD_IP. It also asks Linux to SIGKILL the
process when the harness that started it dies, so a killed test run leaves no
controller behind.
"""

import ctypes
import os
import signal
import sys

from bjc.commands import cli

_PR_SET_PDEATHSIG = 1

ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
if os.getppid() == 1:  # the harness died before prctl took effect
    sys.exit(1)
os.environ["BIND_ADDRESS"] = os.environ["POD_IP"]
sys.exit(cli.main(["run", *sys.argv[1:]]))
