"""The local YAML layer: read a file or a directory of *.yml/*.yaml, keeping the line of every key.

A configuration file is untrusted input (safety rule 7): whatever it holds, reading it either gives
plain dicts/lists/scalars or raises a one-line ConfigError naming the file and line, in bounded time
and memory. Hence the limits below, our own composer (refuses recursive aliases and deep nesting
while parsing) and our own node walk instead of PyYAML's constructor (counts every value produced,
so "billion laughs" aliases stop early; refuses duplicate and non-string keys). Only SafeLoader's
scalar types are built; any other tag (``!!python/...``, ``!!set``) is an error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from appliance.config.errors import ConfigError, Problem
from appliance.config.tree import Provenance, Tree, dotted, merge

YAML_SUFFIXES = (".yml", ".yaml")
MAX_FILE_BYTES = 1024 * 1024  # checked before parsing; a real configuration file is a few KiB
MAX_VALUES = 100_000  # values produced from one file, an alias counting each time it is expanded
MAX_DEPTH = 64  # nesting of mappings/lists (and of merge keys); Patroni's deepest is about 5

_TAG = "tag:yaml.org,2002:"
_MAP, _SEQ, _STR, _NULL = _TAG + "map", _TAG + "seq", _TAG + "str", _TAG + "null"
_MERGE, _VALUE = _TAG + "merge", _TAG + "value"  # what a bare << and = resolve to

if TYPE_CHECKING or not yaml.__with_libyaml__:
    _Base = yaml.SafeLoader
else:
    from yaml.cyaml import CSafeLoader as _Base  # libyaml scans ~5x faster; composing stays ours


@dataclass(frozen=True)
class LoadResult:
    """Every file merged: the settings, the source of each leaf, the bad files, and warnings."""

    tree: Tree
    prov: Provenance
    problems: list[Problem]
    warnings: list[str]


@dataclass
class _Refused(Exception):
    """Why a file is refused: ``line`` (1-based, None when no line applies) and the key's path."""

    line: int | None
    reason: str
    key: tuple[str, ...] = ()


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _quote(text: str) -> str:
    # repr() keeps a message on one line whatever the text holds; long texts are cut.
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def _tag(node: Node) -> str:
    return _quote("!!" + node.tag[len(_TAG):] if node.tag.startswith(_TAG) else node.tag)


class _Loader(_Base, Composer):
    """SafeLoader's parser and scalar constructors, with PyYAML's Python composer made strict."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.anchors = {}  # CSafeLoader does not run Composer.__init__
        self.open_anchors: list[str | None] = []  # one per node being composed: depth and cycles

    def get_single_node(self) -> Node | None:
        return Composer.get_single_node(self)  # the Python composer, also over libyaml's parser

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's parser is untyped
        anchor = getattr(event, "anchor", None)
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.AliasEvent):
            # An alias to a node still being composed is the only way YAML builds a cycle.
            if anchor in self.open_anchors:
                raise _Refused(line, f"recursive YAML alias (&{anchor} refers to itself)")
            return super().compose_node(parent, index)
        if len(self.open_anchors) >= MAX_DEPTH:  # also keeps the recursive composer off RecursionError
            raise _Refused(line, f"nested more than {MAX_DEPTH} levels deep")
        self.open_anchors.append(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self.open_anchors.pop()


_Entries = dict[str, tuple[Node, int]]  # key -> (value node, line of the key)


class _Expander:
    """Turns the node graph into plain values and provenance, counting every value produced."""

    def __init__(self, loader: _Loader, path: str) -> None:
        self.loader, self.path = loader, path
        self.prov: Provenance = {}
        self.spent = 0

    def spend(self, depth: int, count: int = 1) -> None:
        # No line: where the budget runs out says little about which alias is to blame.
        self.spent += count
        if self.spent > MAX_VALUES:
            raise _Refused(None, f"the file expands to more than {MAX_VALUES} values (YAML aliases?)")
        if depth > MAX_DEPTH:  # aliases can nest deeper than the text does
            raise _Refused(None, f"nested more than {MAX_DEPTH} levels deep once YAML aliases are expanded")

    def value(self, node: Node, path: tuple[str, ...], depth: int, tracked: bool) -> Any:
        self.spend(depth)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if node.tag != (_MAP if isinstance(node, MappingNode) else _SEQ):
            reason = f"YAML tag {_tag(node)} is not allowed: settings are mappings, lists and scalars"
            raise _Refused(_line(node), reason, path)
        if isinstance(node, MappingNode):
            return self.mapping(node, path, depth, tracked)
        # Provenance stops at a list: a list is one leaf.
        return [self.value(item, (*path, str(i)), depth + 1, False) for i, item in enumerate(node.value)]

    def mapping(self, node: MappingNode, prefix: tuple[str, ...], depth: int, tracked: bool) -> Tree:
        out: Tree = {}
        for key, (value_node, line) in self.entries(node, prefix, depth).items():
            sub = (*prefix, key)
            value = out[key] = self.value(value_node, sub, depth + 1, tracked)
            if tracked and not (isinstance(value, dict) and value):
                self.prov[dotted(sub)] = f"file {self.path}:{line}"
        return out

    def entries(self, node: MappingNode, path: tuple[str, ...], depth: int) -> _Entries:
        """Merged keys (``<<``) first, then the mapping's own keys, which override them (YAML's
        merge); a key written twice in the same mapping is an error."""
        merged: _Entries = {}
        own: _Entries = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.update(self.merged(value_node, path, depth))  # a later << wins, as in PyYAML
                continue
            key, line = _key(key_node, path), _line(key_node)
            if key in own:
                reason = f"duplicate key {_quote(key)} (lines {own[key][1]} and {line})"
                raise _Refused(line, reason, (*path, key))
            own[key] = (value_node, line)
        return {**merged, **own}

    def merged(self, node: Node, path: tuple[str, ...], depth: int) -> _Entries:
        """What ``<<: *base`` or ``<<: [*a, *b]`` brings in; in a list, earlier mappings win."""
        sources = node.value if isinstance(node, SequenceNode) and node.tag == _SEQ else [node]
        out: _Entries = {}
        for source in reversed(sources):
            if not isinstance(source, MappingNode) or source.tag != _MAP:
                raise _Refused(_line(source), "a merge key (<<) takes a mapping or a list of mappings", path)
            self.spend(depth + 1)
            entries = self.entries(source, path, depth + 1)
            self.spend(depth + 1, len(entries))  # copying entries is work: merge chains add up
            out.update(entries)
        return out

    def scalar(self, node: ScalarNode, path: tuple[str, ...]) -> Any:
        if node.tag not in type(self.loader).yaml_constructors:  # unknown tags, and a bare << or =
            raise _Refused(_line(node), f"YAML tag {_tag(node)} is not allowed here: quote the value", path)
        try:
            return self.loader.construct_object(node, deep=True)
        except Exception:  # PyYAML's constructors raise whatever int(), dates or base64 raise
            # e.g. a date 2024-13-45 or an empty "!!int": say where, not what (it may be a secret).
            reason = f"this value cannot be read as {_tag(node)}: quote it if it is text"
            raise _Refused(_line(node), reason, path) from None


def _key(node: Node, path: tuple[str, ...]) -> str:
    if isinstance(node, ScalarNode) and node.tag in (_STR, _VALUE):
        return str(node.value)
    if isinstance(node, ScalarNode):
        what = f"key {_quote(node.value)} is read as {_tag(node)}, not a string: quote it"
    else:
        what = f"a {'list' if isinstance(node, SequenceNode) else 'mapping'} cannot be a key: keys are strings"
    raise _Refused(_line(node), what, path)


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)  # never more, whatever the file is
    except OSError as exc:
        raise _Refused(None, f"cannot read it: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _Refused(None, f"larger than {MAX_FILE_BYTES} bytes, the limit for a configuration file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _Refused(line, f"not valid UTF-8 (byte {raw[exc.start]:#04x}): save it as UTF-8") from None


def _parse(path: str) -> tuple[Tree, Provenance] | None:
    """The settings and provenance of one file; None when it holds none (empty, comments)."""
    text = _read_text(path)
    try:
        loader = _Loader(text)  # the pure-Python reader checks characters here already
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise _refusal(exc, text) from None
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL):
        return None
    if not isinstance(root, MappingNode) or root.tag != _MAP:
        raise _Refused(_line(root), "the top level must be a mapping of settings (key: value)")
    expander = _Expander(loader, path)
    return expander.mapping(root, (), 1, True), expander.prov


def _refusal(exc: yaml.YAMLError, text: str) -> _Refused:
    """PyYAML's own error (multi-line by default) as a line and a one-line reason."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        context = ""
        if exc.context and exc.context_mark:
            context = f"{exc.context} started at line {exc.context_mark.line + 1}: "
        return _Refused(mark.line + 1 if mark else None, f"YAML syntax error: {context}{exc.problem}")
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        # Its position counts characters or bytes depending on the parser: find the character.
        at = text.find(chr(exc.character))
        line = text.count("\n", 0, at) + 1 if at >= 0 else None
        return _Refused(line, f"control character #x{exc.character:04x} is not allowed in YAML")
    return _Refused(None, f"YAML error: {exc}")


def read_yaml_checked(path: str) -> tuple[Tree, Provenance, list[str]]:
    """One file as a plain nested dict, the provenance ``file <path>:<line>`` of every leaf, and
    warnings (an empty file). Raises a one-line ConfigError naming the file and line."""
    try:
        parsed = _parse(path)
    except _Refused as exc:
        where = f"file {path}:{exc.line}" if exc.line else f"file {path}"
        key = dotted(exc.key)
        key = key if key.isprintable() and len(key) <= 200 else ""  # a key is named, never garbled
        raise ConfigError.one(key, where, " ".join(exc.reason.splitlines())) from None
    if parsed is None:
        return {}, {}, [f"file {path} is empty: no settings read"]
    return parsed[0], parsed[1], []


def read_yaml(path: str) -> tuple[Tree, Provenance]:
    """read_yaml_checked without the warnings."""
    tree, prov, _warnings = read_yaml_checked(path)
    return tree, prov


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


def read_files_checked(files: Sequence[str]) -> LoadResult:
    """Every file merged in order (last wins); a bad file is reported and the others still read."""
    result = LoadResult({}, {}, [], [])
    for path in files:
        try:
            data, data_prov, warnings = read_yaml_checked(path)
        except ConfigError as exc:
            result.problems.extend(exc.problems)
            continue
        result.warnings.extend(warnings)
        merge(result.tree, result.prov, data, data_prov)
    return result


def read_files(files: Sequence[str]) -> tuple[Tree, Provenance, list[Problem]]:
    """read_files_checked as a tuple, without the warnings (kept for existing callers)."""
    result = read_files_checked(files)
    return result.tree, result.prov, result.problems
