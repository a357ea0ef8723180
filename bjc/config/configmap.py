"""A ConfigMap as bjc reads it: `config.yaml` and `pod-template.yaml`, checked together.

The config (`bjc.config.settings`) and the pod template (`bjc.config.podspec`) are validated by
their own modules; this one reads them from a ConfigMap's data or manifest,
checks both and reports every problem of either with its source, so one run of
`bjc check-config` shows them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from bjc.config.podspec import PodTemplate
from bjc.config.schema import unknown_key_warning
from bjc.config.settings import CONFIG_FILE_KEY, POD_TEMPLATE_KEY, Config, Environment, load_config
from bjc.config.values import ConfigError, kind, yaml_error


@dataclass
class LoadedConfig:
    """A validated ConfigMap: the config, the parsed pod template and the load warnings."""

    config: Config
    template: PodTemplate
    warnings: list[str] = field(default_factory=list)


def load_pair(
    config_text: str | None,
    template_text: str | None,
    *,
    report_directory: str | None = None,
    config_source: str = CONFIG_FILE_KEY,
    template_source: str = POD_TEMPLATE_KEY,
    problems: list[str] | None = None,
) -> LoadedConfig:
    """Validate a config and a pod template together; problems are prefixed with their source.

    A missing text (None) is a problem unless `problems` (problems the caller
    already found, reported first) is given, in which case the caller has
    reported it. Raises `ConfigError` with the problems of both.
    """
    report_missing = problems is None
    problems = list(problems or [])
    warnings: list[str] = []
    config: Config | None = None
    template: PodTemplate | None = None
    if config_text is None:
        if report_missing:
            problems.append(f"{config_source}: missing")
    else:
        try:
            config, cfg_warnings = load_config(config_text, report_directory=report_directory)
            warnings.extend(f"{config_source}: {w}" for w in cfg_warnings)
        except ConfigError as exc:
            problems.extend(f"{config_source}: {p}" for p in exc.problems)
    if template_text is None:
        if report_missing:
            problems.append(f"{template_source}: missing")
    else:
        try:
            template = PodTemplate.parse(template_text)
            warnings.extend(f"{template_source}: {w}" for w in template.warnings)
        except ConfigError as exc:
            problems.extend(f"{template_source}: {p}" for p in exc.problems)
    if problems:
        raise ConfigError(problems)
    assert config is not None and template is not None
    return LoadedConfig(config=config, template=template, warnings=warnings)


def load_config_map(data: Mapping[str, Any], env: Environment | None = None) -> LoadedConfig:
    """Validate a ConfigMap's `data` (`config.yaml` + `pod-template.yaml`), applying `env`."""
    problems = []
    texts: dict[str, str | None] = {}
    for key in (CONFIG_FILE_KEY, POD_TEMPLATE_KEY):
        value = data.get(key)
        if value is None:
            problems.append(f"ConfigMap data has no {key!r} key")
        elif not isinstance(value, str):
            problems.append(f"ConfigMap data.{key}: expected a string, got {kind(value)}")
            value = None
        texts[key] = value
    loaded = load_pair(
        texts[CONFIG_FILE_KEY],
        texts[POD_TEMPLATE_KEY],
        report_directory=env.report_directory if env is not None else None,
        problems=problems,
    )
    known = [CONFIG_FILE_KEY, POD_TEMPLATE_KEY]
    for key in data:
        if key not in known:
            loaded.warnings.append(unknown_key_warning(f"ConfigMap data.{key}", key, known))
    return loaded


def load_config_map_manifest(text: str, env: Environment | None = None) -> LoadedConfig:
    """Validate a ConfigMap manifest file (kind ConfigMap, `data` with the two keys)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError([f"ConfigMap manifest: {yaml_error(exc)}"]) from None
    maps = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ConfigMap"]
    if not maps:
        kinds = (
            ", ".join(sorted({str(d.get("kind")) for d in docs if isinstance(d, dict)}))
            or "nothing"
        )
        raise ConfigError([f"ConfigMap manifest: no document of kind ConfigMap (found {kinds})"])
    if len(maps) > 1:
        names = ", ".join(str((m.get("metadata") or {}).get("name")) for m in maps)
        raise ConfigError(
            [f"ConfigMap manifest: {len(maps)} ConfigMaps ({names}); give exactly one"]
        )
    manifest = maps[0]
    data = manifest.get("data")
    if not isinstance(data, dict):
        raise ConfigError([f"ConfigMap manifest: data: expected a mapping, got {kind(data)}"])
    return load_config_map(data, env)
