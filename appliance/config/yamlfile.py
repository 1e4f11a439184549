"""The local YAML layer: read a file or a directory of *.yml/*.yaml, keeping the line of every key."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import yaml

from appliance.config.errors import ConfigError, Problem
from appliance.config.tree import Provenance, Tree, dotted, merge

YAML_SUFFIXES = (".yml", ".yaml")


class _LinedDict(dict[Any, Any]):
    """A mapping as loaded, plus the 1-based line of each of its keys."""

    lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterator[_LinedDict]:
    data = _LinedDict()
    data.lines = {}
    yield data
    data.update(loader.construct_mapping(node))
    # construct_mapping flattened merge keys (<<) into node.value, own keys last, so they win.
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            data.lines[str(loader.construct_object(key_node))] = key_node.start_mark.line + 1


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def expand_paths(paths: Sequence[str] | str | None) -> tuple[list[str], list[Problem]]:
    """Files to read, in order: a directory stands for its *.yml/*.yaml files sorted by name."""
    if paths is None:
        return [], []
    files: list[str] = []
    problems: list[Problem] = []
    for path in [paths] if isinstance(paths, str) else list(paths):
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.endswith(YAML_SUFFIXES))
            files += [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
        elif os.path.exists(path):
            files.append(path)
        else:
            problems.append(Problem("", f"file {path}", "no such file or directory: give an existing "
                                                        "YAML file or a directory of *.yml files"))
    return files, problems


def read_yaml(path: str) -> tuple[Tree, Provenance]:
    """One file as a plain nested dict plus the provenance ``file <path>:<line>`` of every leaf."""
    try:
        with open(path, encoding="utf-8") as stream:
            loaded = yaml.load(stream, Loader=_Loader)  # a SafeLoader: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"file {path}:{mark.line + 1}" if mark else f"file {path}"
        context = ""
        if exc.context and exc.context_mark:
            context = f"{exc.context} started at line {exc.context_mark.line + 1}: "
        raise ConfigError.one("", where, f"YAML syntax error: {context}{exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError.one("", f"file {path}", f"YAML error: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError.one("", f"file {path}", f"cannot read it: {reason}") from None
    if loaded is None:
        return {}, {}
    if not isinstance(loaded, dict):
        raise ConfigError.one("", f"file {path}", "the top level must be a mapping of settings (key: value)")
    prov: Provenance = {}
    return _plain_mapping(loaded, (), path, prov), prov


def _plain_mapping(data: dict[Any, Any], prefix: tuple[str, ...], path: str, prov: Provenance) -> Tree:
    lines: dict[str, int] = getattr(data, "lines", {})
    out: Tree = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        sub = (*prefix, key)
        line = lines.get(key)
        if isinstance(value, dict) and value:
            out[key] = _plain_mapping(value, sub, path, prov)
        else:
            out[key] = _plain(value)
            prov[dotted(sub)] = f"file {path}:{line}" if line else f"file {path}"
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def read_files(files: Sequence[str]) -> tuple[Tree, Provenance, list[Problem]]:
    """Every file merged in order (last wins); a bad file is reported and the others still read."""
    tree: Tree = {}
    prov: Provenance = {}
    problems: list[Problem] = []
    for path in files:
        try:
            data, data_prov = read_yaml(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        merge(tree, prov, data, data_prov)
    return tree, prov, problems
