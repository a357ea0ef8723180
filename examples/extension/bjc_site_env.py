"""An example bjc extension (the Go controller's `CustomPodEnv`, in Python).

Adds two variables to every container of every job pod: `SITE`, the `site` value of
`custom:` in config.yaml (`custom: {site: zurich}`), and `JOB_CONTAINER`, the
container's name. bjc calls `extend_env` once per container when it renders a pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bjc.config.settings import Config


class SiteEnv:
    def extend_env(
        self,
        config: Config,
        node_name: str,
        execution_id: str,
        service_ip: str,
        container: dict[str, Any],
    ) -> Mapping[str, str]:
        return {
            "SITE": str(config.custom.get("site", "unknown")),
            "JOB_CONTAINER": container["name"],
        }
