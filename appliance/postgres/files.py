"""The files we own in and around a data directory: our conf include, pg_hba, passfiles, markers."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.postgres.config import ConnInfo, PgConfig, UserCredentials
from appliance.postgres.confsyntax import CUSTOM_NAME_RE, NAME_RE, quote_conf_value

log = logging.getLogger(__name__)

APPLIANCE_CONF = "postgresql.appliance.conf"
INCLUDE_LINE = f"include '{APPLIANCE_CONF}'"
_INCLUDE_RE = re.compile(r"^\s*include\s*=?\s*'" + re.escape(APPLIANCE_CONF) + r"'\s*(#.*)?$", re.M)
_LINE_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*'((?:[^'\\]|''|\\.)*)'\s*$")
_HEADER = "# Written by pgappliance; edits are overwritten. Change settings through the appliance config.\n"

# Set from PgConfig or by the HA manager only; a value in `parameters` is ignored (with a warning).
LOCAL_IDENTITY_KEYS = frozenset(
    {
        "listen_addresses",
        "port",
        "unix_socket_directories",
        "primary_conninfo",
        "primary_slot_name",
        "synchronous_standby_names",
        "recovery_target_timeline",
        "hot_standby",
        "wal_log_hints",
        "data_directory",
        "config_file",
        "hba_file",
        "ident_file",
        "ssl",
        "ssl_cert_file",
        "ssl_key_file",
        "ssl_ca_file",
    }
)
# Defaults a `parameters` value overrides (wal_level only with replica/logical).
# The socket is reserved to PostgreSQL's user and group: pg_hba trusts local connections.
SERVER_DEFAULTS: dict[str, str] = {
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "wal_keep_size": "128MB",
    "unix_socket_permissions": "0770",
    # A standby's status reply is what releases commits waiting for it: with the 10 s default, a
    # standby newly named synchronous holds every commit up to 10 s (the strict-sync stall after a
    # failover). And a replica whose upstream went away retries after 1 s, not 5 s.
    "wal_receiver_status_interval": "1s",
    "wal_retrieve_retry_interval": "1s",
}


@dataclass(frozen=True)
class FileOwner:
    """uid/gid that files for PostgreSQL must belong to (None when we already are that user)."""

    uid: int
    gid: int

    @classmethod
    def for_user(cls, user: str | None) -> FileOwner | None:
        if user is None:
            return None
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise ValueError(f"OS user {user!r} (PgConfig.run_as) does not exist; create it or fix run_as") from None
        return cls(entry.pw_uid, entry.pw_gid)

    def apply(self, path: str) -> None:
        os.chown(path, self.uid, self.gid, follow_symlinks=False)


def write_file(path: str, content: str, owner: FileOwner | None, mode: int = 0o600) -> bool:
    """Atomically replace `path` with `content`; returns False (and writes nothing) when unchanged."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == content:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if owner:
            owner.apply(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def conf_value(value: Any) -> str:
    """A postgresql.conf value, quoted; ValueError for what cannot be one line (newline, NUL)."""
    return quote_conf_value(value)


def conf_line(name: str, value: Any) -> str:
    """``name = 'value'``; a name that is not a parameter name never reaches the file."""
    if not (NAME_RE.fullmatch(name) or CUSTOM_NAME_RE.fullmatch(name)):
        raise ValueError(f"{name!r} is not a PostgreSQL parameter name")
    return f"{name} = {conf_value(value)}\n"


def _unquote(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "\\'" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _setting(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def effective_parameters(parameters: Mapping[str, Any], managed: Mapping[str, str] | None = None) -> dict[str, str]:
    """SERVER_DEFAULTS overlaid with `parameters`, minus the keys we manage ourselves (`managed`:
    the values we write for them; a different given value is reported, then ignored)."""
    result = dict(SERVER_DEFAULTS)
    for key, value in parameters.items():
        if key in LOCAL_IDENTITY_KEYS:
            if managed is not None and value is not None and _setting(value) != managed.get(key):
                log.warning("parameter %s=%r ignored: the appliance manages it (%r)", key, value, managed.get(key))
            continue
        if value is None:
            continue
        result[key] = _setting(value)
    if result["wal_level"] not in ("replica", "logical"):
        log.warning("wal_level=%s cannot replicate; using replica", result["wal_level"])
        result["wal_level"] = "replica"
    return result


def render_appliance_conf(
    cfg: PgConfig,
    parameters: Mapping[str, Any],
    primary_conninfo: str | None,
    primary_slot_name: str | None,
    synchronous_standby_names: str,
) -> str:
    """The whole content of postgresql.appliance.conf, deterministic (sorted parameters)."""
    managed: dict[str, str] = {
        "listen_addresses": cfg.listen_host,
        "port": str(cfg.listen_port),
        "unix_socket_directories": cfg.socket_dir,
        "hot_standby": "on",
        "wal_log_hints": "on",
        "recovery_target_timeline": "latest",
        "primary_conninfo": primary_conninfo or "",
        "primary_slot_name": primary_slot_name or "",
        "synchronous_standby_names": synchronous_standby_names,
        **_tls_lines(cfg),
    }
    lines = [_HEADER, "# managed by the appliance\n"]
    lines += [conf_line(k, v) for k, v in managed.items()]
    lines.append("# parameters\n")
    params = effective_parameters(parameters, managed)
    lines += [conf_line(k, params[k]) for k in sorted(params)]
    return "".join(lines)


def _tls_lines(cfg: PgConfig) -> dict[str, str]:
    tls = cfg.server_tls
    if tls is None:
        return {"ssl": "off"}
    return {"ssl": "on", "ssl_cert_file": tls.cert_file, "ssl_key_file": tls.key_file,
            "ssl_ca_file": tls.ca_file or ""}


def parse_appliance_conf(text: str) -> dict[str, str]:
    """Read back a file written by render_appliance_conf: {name: value}."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        m = _LINE_RE.match(line)
        if m:
            result[m.group(1)] = _unquote(m.group(2))
    return result


def read_appliance_conf(data_dir: str) -> dict[str, str]:
    try:
        with open(os.path.join(data_dir, APPLIANCE_CONF), encoding="utf-8") as f:
            return parse_appliance_conf(f.read())
    except FileNotFoundError:
        return {}


def current_parameters(data_dir: str, default: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters in our conf file now (without the keys we manage); ``default`` when none."""
    found = read_appliance_conf(data_dir)
    params: dict[str, Any] = {k: v for k, v in found.items() if k not in LOCAL_IDENTITY_KEYS}
    return params or dict(default)


def ensure_include(data_dir: str, owner: FileOwner | None) -> bool:
    """Append our include line to postgresql.conf once (last, so that our values win)."""
    path = os.path.join(data_dir, "postgresql.conf")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    if _INCLUDE_RE.search(text):
        return False
    if text and not text.endswith("\n"):
        text += "\n"
    text += f"\n# pgappliance settings (listen, replication, parameters)\n{INCLUDE_LINE}\n"
    return write_file(path, text, owner)


def render_hba(lines: Sequence[str]) -> str:
    return _HEADER + "".join(f"{line}\n" for line in lines)


def set_standby_signal(data_dir: str, standby: bool, owner: FileOwner | None) -> bool:
    path = os.path.join(data_dir, "standby.signal")
    exists = os.path.exists(path)
    if standby and not exists:
        write_file(path, "", owner)
        return True
    if not standby and exists:
        os.unlink(path)
        return True
    return False


def incomplete_marker(data_dir: str) -> str:
    """Beside the data dir (pg_basebackup wants an empty dir): present while initdb/clone/rewind runs."""
    norm = os.path.normpath(data_dir)
    return os.path.join(os.path.dirname(norm), f".{os.path.basename(norm)}.pgappliance-incomplete")


def set_incomplete(data_dir: str, operation: str) -> None:
    with open(incomplete_marker(data_dir), "w", encoding="utf-8") as f:
        f.write(f"{operation}\n")


def clear_incomplete(data_dir: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(incomplete_marker(data_dir))


def _remove_entry(path: str) -> None:
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    else:
        shutil.rmtree(path)


def _wipe_contents(directory: str) -> None:
    for entry in os.listdir(directory):
        _remove_entry(os.path.join(directory, entry))


def wipe_data_dir(data_dir: str, owner: FileOwner | None) -> None:
    """Empty the data dir (and what its pg_wal/tablespace links point to); keep the dir, mode 0700."""
    if os.path.isdir(data_dir):
        wal = os.path.join(data_dir, "pg_wal")
        if os.path.islink(wal) and os.path.isdir(wal):
            _wipe_contents(os.path.realpath(wal))
        tblspc = os.path.join(data_dir, "pg_tblspc")
        if os.path.isdir(tblspc):
            for link in os.listdir(tblspc):
                target = os.path.realpath(os.path.join(tblspc, link))
                # PostgreSQL owns only its PG_<major>_<catversion> subdirectory of a tablespace.
                for sub in os.listdir(target) if os.path.isdir(target) else []:
                    if sub.startswith("PG_"):
                        _remove_entry(os.path.join(target, sub))
        _wipe_contents(data_dir)
    make_private_dir(data_dir, owner)


def make_private_dir(path: str, owner: FileOwner | None, mode: int = 0o700) -> None:
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    if owner:
        owner.apply(path)


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def temp_private_file(content: str, directory: str, owner: FileOwner | None) -> Iterator[str]:
    """A 0600 file readable only by PostgreSQL's user (and us), removed afterwards."""
    fd, path = tempfile.mkstemp(dir=directory, prefix=".pgappliance-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(path, 0o600)
        if owner:
            owner.apply(path)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def wildcard_passfile(users: Sequence[UserCredentials]) -> str:
    """One line per role, any host: the walreceiver and pg_rewind read it (PGPASSFILE / passfile=)."""
    return "".join(":".join(["*", "*", "*", _pgpass_field(u.username), _pgpass_field(u.password)]) + "\n"
                   for u in users if u.password)


def passfile_content(conns: Sequence[ConnInfo]) -> str:
    lines = []
    for c in conns:
        if c.password:
            fields = [c.host, str(c.port), "*", c.user, c.password]
            lines.append(":".join(_pgpass_field(x) for x in fields) + "\n")
    return "".join(lines)


def temp_passfile(
    conns: Sequence[ConnInfo], directory: str, owner: FileOwner | None
) -> contextlib.AbstractContextManager[str]:
    """A pgpass file for `conns`: passwords never appear on a command line (ps) nor in the environment."""
    return temp_private_file(passfile_content(conns), directory, owner)
