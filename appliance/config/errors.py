"""Configuration errors: each problem names the dotted key, the layer it came from and why; no secrets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

REDACTED = "******"
_SECRET_WORDS = ("password", "passwd", "secret", "token")


def is_secret_key(key: str) -> bool:
    """True when a dotted key names a secret: password, secret, token, or any kind of key."""
    last = key.rsplit(".", 1)[-1].lower()
    if any(word in last for word in _SECRET_WORDS):
        return True
    return last.endswith("key") or last.startswith("key") or "key" in last.split("_")


def redact(key: str, value: Any) -> Any:
    """The value, or REDACTED when the key names a secret and a value is set."""
    if value is None or not is_secret_key(key):
        return value
    return REDACTED


def shown(key: str, value: Any) -> str:
    """A short ' (got ...)' suffix for messages; empty for secrets, mappings and long values."""
    if is_secret_key(key) or isinstance(value, dict | list):
        return ""
    text = repr(value)
    return f" (got {text})" if len(text) <= 80 else ""


@dataclass(frozen=True)
class Problem:
    """One bad setting: ``key`` (dotted, or '' for a whole file), ``source`` (layer), ``reason``."""

    key: str
    source: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.key} ({self.source})" if self.key else self.source
        return f"{where}: {self.reason}"


class ConfigError(ValueError):
    """Invalid configuration; carries every problem found, so one run shows them all."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(self._message())

    @classmethod
    def one(cls, key: str, source: str, reason: str) -> ConfigError:
        return cls([Problem(key, source, reason)])

    def _message(self) -> str:
        if len(self.problems) == 1:
            return f"invalid configuration: {self.problems[0]}"
        lines = [f"invalid configuration ({len(self.problems)} problems):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)
