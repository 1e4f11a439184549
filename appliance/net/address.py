"""Addresses read one way: host:port and [v6]:port, and a member's conn_url (postgres://host:port/postgres)."""

from __future__ import annotations

POSTGRES_PORT = 5432
_SCHEMES = ("postgres", "postgresql")


def host_and_port(address: str) -> tuple[str, str | None]:
    """``host:port`` -> ("host", "port"), ``[v6]:port`` -> ("v6", "port"); without a port
    (``host``, ``[v6]``) the port is None. The port is not checked."""
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:
        return address.strip("[]"), None
    return host.strip("[]"), port


def split_host_port(address: str, default_port: int = POSTGRES_PORT) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) -> (host, port), as in Patroni's listen/connect_address;
    raises ValueError for a port that is not a number."""
    host, port = host_and_port(address)
    return host, default_port if port is None else int(port)


def conn_url(host: str, port: int) -> str:
    """Patroni's member ``conn_url``: ``postgres://host:port/postgres``."""
    shown = f"[{host}]" if ":" in host else host
    return f"postgres://{shown}:{port}/postgres"


def _netloc(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) of a URL, user info, path and query dropped; no scheme: ("", all of it)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    for end in "/?#":
        rest = rest.split(end, 1)[0]
    return scheme.lower(), rest.rpartition("@")[2]


def conn_url_address(url: str) -> tuple[str | None, int | None]:
    """A published conn_url's (host, port), as far as it says: None for what is missing or unreadable
    (a member's key is another node's word: shown as it is, never an error)."""
    host, port = host_and_port(_netloc(url)[1])
    return host or None, int(port) if port is not None and port.isdigit() else None


def parse_conn_url(url: str) -> tuple[str, int]:
    """``postgres://host:port/db`` -> (host, port), the port 5432 when absent, to connect to;
    raises ValueError naming what is wrong."""
    scheme, netloc = _netloc(url)
    host, port = host_and_port(netloc)
    if scheme not in _SCHEMES or not host or (port is not None and not port.isdigit()):
        raise ValueError(f"conn_url {url!r} is not of the form postgres://host:port/postgres")
    return host, POSTGRES_PORT if port is None else int(port)
