"""`bjc run`, listening on POD_IP only: what a pod's own network namespace gives it.

Controller replicas of the reliability scenarios share one host, each with its own
loopback address (127.0.0.2, 127.0.0.3, ...) as POD_IP, and the same ports from
one ConfigMap. `bjc run` listens on every interface, so two replicas would collide
on their ports; this wrapper starts the unchanged `bjc run` with its servers bound
to POD_IP. It changes nothing else in bjc. (Should `bjc run` learn to bind a given
address itself, that part goes.) It also asks Linux to SIGKILL the process when
the harness that started it dies, so a killed test run leaves no controller behind.
"""

import ctypes
import functools
import os
import signal
import sys

from bjc import runtime
from bjc.commands import cli

_PR_SET_PDEATHSIG = 1

ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
if os.getppid() == 1:  # the harness died before prctl took effect
    sys.exit(1)
runtime.Runtime = functools.partial(runtime.Runtime, bind_host=os.environ["POD_IP"])
sys.exit(cli.main(["run", *sys.argv[1:]]))
