"""The environment layer: APPLIANCE_* (``__`` nests, JSON values), POSTGRES_* and *_FILE secrets."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from appliance.config.errors import Problem
from appliance.config.tree import Provenance, Tree, dotted, leaf_paths, merge

ENV_PREFIX = "APPLIANCE_"
FILE_SUFFIX = "_FILE"
# Names under the prefix that are not settings: the config path, and the CLI's demo options.
NON_CONFIG_ENV = frozenset({"APPLIANCE_CONFIG", "APPLIANCE_DCS", "APPLIANCE_PEERS", "APPLIANCE_DEMO_INSECURE"})
NON_CONFIG_PREFIXES = ("APPLIANCE_DEMO_", "APPLIANCE_API_")
# Fixed names (each with a *_FILE twin): the official postgres image's and our replication password.
ALIASES: dict[str, tuple[str, ...]] = {
    "POSTGRES_USER": ("postgresql", "authentication", "superuser", "username"),
    "POSTGRES_PASSWORD": ("postgresql", "authentication", "superuser", "password"),
    "APPLIANCE_REPLICATION_PASSWORD": ("postgresql", "authentication", "replication", "password"),
}
# An APPLIANCE_..._FILE variable is a file twin only for secrets: ssl_cert_file and friends are
# PostgreSQL parameters whose value is a path.
_SECRET_SUFFIXES = ("PASSWORD", "SECRET", "TOKEN")


@dataclass(frozen=True)
class _Setting:
    path: tuple[str, ...]
    value: Any
    source: str
    var: str


def env_layer(
    env: Mapping[str, str], keeps_string: Callable[[tuple[str, ...]], bool]
) -> tuple[Tree, Provenance, list[Problem]]:
    """The env vars as one layer. ``keeps_string(path)`` is true where the schema wants a string,
    so that APPLIANCE_NAME=1 or a password of digits stays a string instead of becoming JSON."""
    settings, problems = _collect(env, keeps_string)
    seen: dict[tuple[str, ...], _Setting] = {}
    for setting in settings:
        other = seen.get(setting.path)
        if other is not None:
            problems.append(Problem(dotted(setting.path), f"env {setting.var}",
                                    f"also set by {other.var}: set it in one variable only"))
        seen[setting.path] = setting
    tree: Tree = {}
    prov: Provenance = {}
    # Shallow first, so that APPLIANCE_RESTAPI__LISTEN refines a whole APPLIANCE_RESTAPI object.
    for setting in sorted(seen.values(), key=lambda s: (len(s.path), s.var)):
        layer: Tree = {}
        node = layer
        for key in setting.path[:-1]:
            node = node.setdefault(key, {})
        node[setting.path[-1]] = setting.value
        merge(tree, prov, layer, {dotted(p): setting.source for p in leaf_paths(layer)})
    return tree, prov, problems


def _collect(
    env: Mapping[str, str], keeps_string: Callable[[tuple[str, ...]], bool]
) -> tuple[list[_Setting], list[Problem]]:
    settings: list[_Setting] = []
    problems: list[Problem] = []
    handled: set[str] = set()
    twins = dict(ALIASES)
    for name in env:
        base = name[: -len(FILE_SUFFIX)] if name.endswith(FILE_SUFFIX) else name
        if (base.startswith(ENV_PREFIX) and base.endswith(_SECRET_SUFFIXES) and base not in twins
                and not _not_a_setting(base)):
            path = _path_of(base)
            if path is not None:
                twins[base] = path
    for base, path in sorted(twins.items()):
        handled |= {base, base + FILE_SUFFIX}
        try:
            found = _read_twin(env, base)
        except _TwinError as exc:
            problems.append(Problem(dotted(path), exc.source, exc.reason))
            continue
        if found is not None:
            settings.append(_Setting(path, found[0], found[1], found[2]))
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in handled or _not_a_setting(name):
            continue
        path = _path_of(name)
        if path is None:
            problems.append(Problem(name, f"env {name}", "empty key segment: use single words "
                                    "joined by '__', e.g. APPLIANCE_POSTGRESQL__PARAMETERS__WORK_MEM"))
            continue
        raw = env[name]
        settings.append(_Setting(path, raw if keeps_string(path) else parse_env_value(raw), f"env {name}", name))
    return settings, problems


def _not_a_setting(name: str) -> bool:
    return name in NON_CONFIG_ENV or name.startswith(NON_CONFIG_PREFIXES)


def _path_of(name: str) -> tuple[str, ...] | None:
    parts = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__"))
    return None if any(not part for part in parts) else parts


def parse_env_value(raw: str) -> Any:
    """JSON when it parses (numbers, true/false, null, lists, objects), else the string itself."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class _TwinError(Exception):
    def __init__(self, source: str, reason: str) -> None:
        super().__init__(reason)
        self.source = source
        self.reason = reason


def _read_twin(env: Mapping[str, str], name: str) -> tuple[str, str, str] | None:
    """docker-library ``file_env``: VAR or VAR_FILE, never both; empty counts as unset."""
    file_var = name + FILE_SUFFIX
    plain = env.get(name, "")
    file_path = env.get(file_var, "")
    if plain and file_path:
        raise _TwinError(f"env {name}", f"both {name} and {file_var} are set (but are exclusive): "
                                        f"unset one of them")
    if plain:
        return plain, f"env {name}", name
    if not file_path:
        return None
    try:
        with open(file_path, encoding="utf-8") as stream:
            content = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise _TwinError(f"env {file_var}", f"cannot read {file_path}: {reason}: mount the secret "
                                            f"file there, readable by this user") from None
    # Like the shell's $(< file): trailing newlines are not part of the secret.
    return content.rstrip("\r\n"), f"env {file_var} ({file_path})", file_var
