"""pg_hba.conf lines: what the appliance always keeps, and checks of the lines operators give (pure)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

CONNECTION_TYPES = frozenset({"local", "host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc"})
METHODS = frozenset({"trust", "reject", "scram-sha-256", "md5", "password", "gss", "sspi", "ident", "peer", "pam",
                     "ldap", "radius", "cert", "bsd"})
# Lines that accept a network client without TLS (when the cluster runs TLS they would undo it).
_PLAINTEXT_TYPES = frozenset({"host", "hostnossl"})
_UNSAFE_CHARS = frozenset("\0\n\r\x0b\x0c\x85\u2028\u2029")


def own_lines(replication_user: str, ssl: bool) -> tuple[str, ...]:
    """Kept in front of any operator lines: the manager's local access and the members' replication."""
    host = "hostssl" if ssl else "host"
    return ("local all all trust", "local replication all trust",
            f"{host} replication {replication_user} all scram-sha-256")


def line_problem(line: object, *, ssl: bool) -> str | None:
    """Why one pg_hba line cannot be written (PostgreSQL would reject the file, or TLS would be undone)."""
    if not isinstance(line, str):
        return f"a pg_hba entry must be a string, not {type(line).__name__}"
    if any(ch in _UNSAFE_CHARS for ch in line):
        return "contains a line break or NUL character: give one entry per line"
    try:
        fields = shlex.split(line, comments=True, posix=True)
    except ValueError as exc:
        return f"cannot be parsed ({exc})"
    if not fields:
        return "is empty (or only a comment)"
    kind = fields[0]
    if kind.startswith("include"):
        return f"{kind} directives are not accepted: list the lines themselves"
    if kind not in CONNECTION_TYPES:
        return f"the connection type {kind!r} is not one of {', '.join(sorted(CONNECTION_TYPES))}"
    needed = 4 if kind == "local" else 5
    if len(fields) < needed:
        form = "local DATABASE USER METHOD" if kind == "local" else f"{kind} DATABASE USER ADDRESS METHOD"
        return f"too few fields: expected {form} [OPTIONS]"
    method_at = 3 if kind == "local" else 4
    if kind != "local" and "/" not in fields[3] and _looks_like_mask(fields[4]):
        method_at = 5  # ADDRESS NETMASK METHOD
        if len(fields) <= method_at:
            return "no authentication method after the address and netmask"
    method = fields[method_at]
    if method not in METHODS:
        return f"unknown authentication method {method!r}"
    if ssl and kind in _PLAINTEXT_TYPES and method != "reject":
        return (f"{kind} accepts connections without TLS; the cluster runs TLS (security.postgresql_tls): use "
                "hostssl, or turn TLS off on purpose")
    return None


def _looks_like_mask(token: str) -> bool:
    parts = token.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def problems(lines: Sequence[object], *, ssl: bool) -> list[tuple[int, str]]:
    """(index, reason) of each bad line."""
    return [(index, why) for index, line in enumerate(lines) if (why := line_problem(line, ssl=ssl))]


def compose(operator_lines: Sequence[str] | None, replication_user: str, ssl: bool,
            default: Sequence[str]) -> tuple[str, ...]:
    """The whole file: our own lines, then the operator's (or the default ones when none given)."""
    own = own_lines(replication_user, ssl)
    rest = list(operator_lines) if operator_lines is not None else [x for x in default if x not in own]
    return (*own, *(line for line in rest if line not in own))
