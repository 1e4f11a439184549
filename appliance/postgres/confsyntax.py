"""The postgresql.conf line syntax: legal parameter names and safely quoted values (pure, no I/O)."""

from __future__ import annotations

import re
from typing import Any

# Built-in names, and `prefix.name` placeholders for extensions. Stricter than PostgreSQL's -c on
# purpose: `$` (which -c accepts in custom names) and a second dot are syntax errors in a conf file.
NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")
CUSTOM_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*")

# Line breaks for PostgreSQL's conf lexer (\n; it drops \r) or for Python's str.splitlines(), which
# our own reader (files.parse_appliance_conf) uses, and NUL, which cannot pass through argv.
_UNSAFE_VALUE_CHARS = frozenset("\0\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
# An argv string longer than 128 KiB fails exec (E2BIG); no real parameter needs this much.
MAX_VALUE_LENGTH = 65536


def normalize_name(name: str) -> str | None:
    """The lower-case name, or None when it is not a legal parameter name."""
    if not name.isascii():  # "\u212a".lower() == "k": no Unicode folding into a legal name
        return None
    lower = name.lower()
    if NAME_RE.fullmatch(lower) or CUSTOM_NAME_RE.fullmatch(lower):
        return lower
    return None


def render_value(value: Any) -> str:
    """The text PostgreSQL gets: bool -> on/off, int/float -> str, str as is; ValueError otherwise."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    kind = type(value).__name__
    raise ValueError(f"a {kind} is not a parameter value; give one string (a list as 'a, b'), a number or a bool")


def value_problem(text: str) -> str | None:
    """Why ``text`` cannot be a conf-file value (line break, NUL, too long, not Unicode), or None."""
    if any(ch in _UNSAFE_VALUE_CHARS for ch in text):
        return "the value contains a line break or NUL character, which cannot be written to postgresql.conf"
    if len(text) > MAX_VALUE_LENGTH:
        return f"the value is longer than {MAX_VALUE_LENGTH} characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "the value is not valid Unicode text (unpaired surrogate)"
    return None


def quote_conf_value(value: Any) -> str:
    """A postgresql.conf value: single-quoted, `'` and `\\` doubled; ValueError if it cannot be one line."""
    text = render_value(value)
    problem = value_problem(text)
    if problem:
        raise ValueError(problem)
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
