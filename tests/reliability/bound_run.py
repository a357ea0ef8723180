"""`bjc run`, listening on POD_IP only: what a pod's own network namespace gives it.

Controller replicas of the reliability scenarios share one host, each with its own
loopback address (127.0.0.2, 127.0.0.3, ...) as POD_IP, and the same ports from
one ConfigMap. `bjc run` listens on every interface, so two replicas would collide
on their ports; this wrapper starts the unchanged `bjc run` with its servers bound
to POD_IP. It changes nothing else. (Should `bjc run` learn to bind a given
address itself, this file goes.)
"""

import functools
import os
import sys

from bjc import cli, runtime

runtime.Runtime = functools.partial(runtime.Runtime, bind_host=os.environ["POD_IP"])  # type: ignore[misc]
sys.exit(cli.main(["run", *sys.argv[1:]]))
