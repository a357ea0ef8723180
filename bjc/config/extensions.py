"""Extensions: Python code that adds environment variables to every job pod's containers.

The Go controller is also a library: a custom `main` registers `CustomPodEnv`
extenders, whose `ExtendEnv(cfg, nodeName, id, serviceIP, container)` returns extra
env vars for each job pod, reading the `custom:` values of config.yaml. This is the
same extension point for bjc, without a rebuild: an object with an `extend_env`
method (or a function of those five arguments) named `module:object`, given to
`bjc run --extension module:object` or installed as a Python entry point of the
group `bjc.extensions` (every installed one is used). A class is instantiated with
no arguments.

`extend_env(config, node_name, execution_id, service_ip, container)` gets the
running `Config` (`config.custom` holds the `custom:` values), the node, the
execution id, the callback host job pods call (`CALLBACK_SERVICE_NAME`) and the
container (a copy of the rendered dict: changing it changes nothing). It returns a
mapping of variable names to string values, added after bjc's own variables (a
template variable of the same name is replaced; bjc's own names are refused).

Extensions are checked when loaded, before `bjc run` contacts the cluster: the module
imports, the object exists and takes the five arguments; otherwise bjc refuses to
start with the extension's name and the error. A call that raises or returns
something else than names to strings fails that node's job with the reason (the
other nodes run).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from bjc.config.settings import Config

ENTRY_POINT_GROUP = "bjc.extensions"
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")  # what the API accepts


class PodEnvExtension(Protocol):
    """What an extension object provides (the Go controller's `CustomPodEnv`)."""

    def extend_env(
        self,
        config: Config,
        node_name: str,
        execution_id: str,
        service_ip: str,
        container: dict[str, Any],
    ) -> Mapping[str, str]: ...


ExtendEnv = Callable[[Config, str, str, str, dict[str, Any]], Mapping[str, str]]


class ExtensionError(Exception):
    """An extension that cannot be loaded, or a call of one that failed."""


@dataclass(frozen=True)
class Extension:
    name: str  # `module:object`, as given or as the entry point names it
    extend_env: ExtendEnv

    def env(
        self,
        config: Config,
        node_name: str,
        execution_id: str,
        service_ip: str,
        container: dict[str, Any],
        reserved: frozenset[str],
    ) -> dict[str, str]:
        """The variables this extension adds to `container`; ExtensionError if it fails."""
        try:
            got = self.extend_env(
                config, node_name, execution_id, service_ip, copy.deepcopy(container)
            )
        except Exception as e:
            raise ExtensionError(f"extension {self.name}: {type(e).__name__}: {e}") from e
        if not isinstance(got, Mapping):
            raise ExtensionError(
                f"extension {self.name}: extend_env returned {type(got).__name__}, "
                "not a mapping of names to strings"
            )
        for key, value in got.items():
            if not isinstance(key, str) or not _ENV_NAME.match(key) or key in reserved:
                why = "one of bjc's own" if key in reserved else "not a valid variable name"
                raise ExtensionError(f"extension {self.name}: env name {key!r}: {why}")
            if not isinstance(value, str):
                raise ExtensionError(
                    f"extension {self.name}: env {key}: {type(value).__name__}, not a string"
                )
        return dict(got)


def load(spec: str) -> Extension:
    """`module:object` as an Extension; ExtensionError with the name and why not."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ExtensionError(f"extension {spec}: expected module:object")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
        return _extension(spec, obj)
    except ExtensionError:
        raise
    except Exception as e:
        raise ExtensionError(f"extension {spec}: {type(e).__name__}: {e}") from e


def load_all(specs: Iterable[str], *, installed: bool = True) -> list[Extension]:
    """The extensions named, then (`installed`) those of the `bjc.extensions` entry points."""
    found = [load(spec) for spec in specs]
    if installed:
        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                found.append(_extension(f"{point.name} ({point.value})", point.load()))
            except ExtensionError:
                raise
            except Exception as e:
                raise ExtensionError(
                    f"extension {point.name} ({point.value}): {type(e).__name__}: {e}"
                ) from e
    return found


def _extension(name: str, obj: Any) -> Extension:
    if inspect.isclass(obj):
        obj = obj()
    function = getattr(obj, "extend_env", None)
    if function is None and callable(obj) and not inspect.ismodule(obj):
        function = obj
    if not callable(function):
        raise ExtensionError(f"extension {name}: has no extend_env method and is not callable")
    try:
        inspect.signature(function).bind("config", "node", "id", "ip", {})
    except TypeError as e:
        raise ExtensionError(
            f"extension {name}: extend_env must take (config, node_name, execution_id, "
            f"service_ip, container): {e}"
        ) from None
    except ValueError:
        pass  # no signature to read (a builtin): called as it is
    return Extension(name, function)
