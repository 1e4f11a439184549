"""Turn pydantic validation errors into Problems that name the key and its layer, never a secret."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from appliance.config.errors import Problem, shown

# path (up to the first list index) -> (key as the user wrote it, source)
Locate = Callable[[tuple[str, ...]], tuple[str, str]]

_VALUE_ERROR_PREFIXES = ("Value error, ", "Assertion failed, ")


def problems_from(
    exc: ValidationError, locate: Locate, note: Callable[[tuple[str, ...]], str] | None = None
) -> list[Problem]:
    """One Problem per pydantic error; ``note(path)`` may add context to the reason."""
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        path: list[str] = []
        for part in loc:
            if isinstance(part, int):
                break
            path.append(str(part))
        key, source = locate(tuple(path))
        key += "".join(f"[{p}]" for p in loc[len(path):] if isinstance(p, int))
        reason = _reason(err, key) + (note(tuple(path)) if note else "")
        problems.append(Problem(key, source, reason))
    return problems


def _reason(err: ErrorDetails, key: str) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key: check its spelling (config/appliance.yml lists every key)"
    if kind == "missing":
        return "required: set it"
    msg = str(err["msg"])
    for prefix in _VALUE_ERROR_PREFIXES:
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg + shown(key, err.get("input"))
