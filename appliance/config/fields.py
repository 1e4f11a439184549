"""Constrained field types of the settings: what may reach a rendered file or a command line.

Every value that the runtime writes into haproxy.cfg, supervisord.conf, etcd's flags or a DCS key
passes one of these at load time, so a newline (or any character the target's syntax gives a meaning
to) is refused naming the key, instead of injecting a line into a generated file.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field

_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_LAG = re.compile(r"\d{1,15}\s*([kKmMgGtT]?[bB]?)")
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _host(value: str) -> str:
    """An IP address (v4, v6) or a DNS host name; '*' and '' are not hosts."""
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(text)
        return value
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(value):
        raise ValueError(f"{value!r} is neither an IP address nor a host name")
    return value


def check_host(value: str) -> str:
    return _host(value)


def check_host_port(value: str) -> str:
    """``host:port``, ``[v6]:port``; the port 1-65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port with a port of 1-65535, e.g. 10.0.0.1:8008 (got {value!r})")
    _host(host)
    return value


def check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{value!r} must be 1-63 letters, digits, '.', '_' or '-' (it names keys, files, servers)")
    return value


def check_lag(value: str) -> str:
    if not _LAG.fullmatch(value.strip()):
        raise ValueError(f"{value!r} is not a size such as 16MB, 1024kB or 1048576")
    return value


def check_token(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError("must be 1-128 letters, digits, '.', '_' or '-'")
    return value


Host = Annotated[str, AfterValidator(check_host)]
HostPort = Annotated[str, AfterValidator(check_host_port)]
Name = Annotated[str, AfterValidator(check_name)]
Lag = Annotated[str, AfterValidator(check_lag)]
Token = Annotated[str, AfterValidator(check_token)]
Port = Annotated[int, Field(ge=1, le=65535)]
