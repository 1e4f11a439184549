"""Validation of PostgreSQL parameters before they reach postgresql.appliance.conf or the DCS.

Two stages: cheap rules on names (syntax, appliance-managed, read-only, unknown, OS commands from
the DCS) and then the values, checked by the PostgreSQL binary that will run them (`postgres -C`,
through a ValueChecker). quote_conf_value() renders a value for one postgresql.conf line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from appliance.postgres.confsyntax import (
    normalize_name,
    render_value,
    value_problem,
)
from appliance.postgres.guc_catalog import INTERNAL_PARAMETERS, GucCatalog
from appliance.postgres.process import CommandResult, Runner

Layer = Literal["local", "dynamic"]

# Directives of the conf file grammar, not parameters: `include = '/any/file'` would pull it in.
CONF_DIRECTIVES = frozenset({"include", "include_dir", "include_if_exists"})

# Set by the appliance from its own settings or by the HA manager (as Patroni protects them);
# a user value would break replication, fencing or the appliance's TLS.
MANAGED = frozenset(
    {
        "listen_addresses",  # postgresql.listen
        "port",  # postgresql.listen
        "unix_socket_directories",  # the manager's local connections go there
        "primary_conninfo",  # follow/rewind decisions of the HA manager
        "primary_slot_name",
        "synchronous_standby_names",  # the sync key is the truth (safety rule 2)
        "hot_standby",  # a replica must answer read-only health checks
        "promote_trigger_file",  # a promotion outside the leader key would break safety rule 1
        "data_directory",  # postgresql.data_dir
        "config_file",
        "hba_file",
        "ident_file",
        "external_pid_file",  # the manager finds the postmaster through postmaster.pid only
        # Patroni sets it to the scope and ignores user values; it is also the walreceiver's
        # fallback application_name, which synchronous replication matches on.
        "cluster_name",
    }
)
# Node-local by nature (file paths of this node) or switching a protection off for every node at
# once: accepted from the node's own YAML/env only (``ssl`` there needs security.postgresql_tls: false).
LOCAL_ONLY = frozenset({"ssl", "ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_crl_file", "ssl_crl_dir"})
# recovery_target, _lsn, _name, _time, _xid, _action, _inclusive, _timeline: a node must follow its
# leader's latest timeline; point-in-time recovery is a bootstrap method, not a parameter.
MANAGED_PREFIXES = ("recovery_target",)

# They run OS commands or load code chosen by whoever writes them: accepted from the node's own
# YAML/env only, never from the DCS, which any etcd client could write (unless explicitly allowed).
COMMANDS = frozenset(
    {
        "archive_command",
        "restore_command",
        "archive_cleanup_command",
        "recovery_end_command",
        "ssl_passphrase_command",
        "archive_library",
        "dynamic_library_path",
    }
)
# Library lists: a plain name loads from $libdir (installed packages); an entry with '/' loads any file.
PRELOAD_LISTS = frozenset({"shared_preload_libraries", "local_preload_libraries", "session_preload_libraries"})


class GucCheckError(RuntimeError):
    """Values could not be checked at all (binary missing, timeout): retry or fix bin_dir; fail closed."""


@dataclass(frozen=True)
class GucProblem:
    """One refused parameter: the name as given, and a reason saying what to do."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name!r}: {self.reason}"


class ValueChecker(Protocol):
    """Checks rendered values (lower-case name -> text); returns one problem per bad parameter."""

    def check(self, values: Mapping[str, str]) -> list[GucProblem]: ...


def _name_rule(name: str, catalog: GucCatalog) -> str | None:
    """Why a (legal, lower-case) name is refused in every layer, or None."""
    if name in CONF_DIRECTIVES:
        return "a postgresql.conf directive, not a parameter; it cannot be set through the appliance"
    if name in MANAGED or name.startswith(MANAGED_PREFIXES):
        return "managed by the appliance; set it through the appliance's own settings, not parameters"
    info = catalog.get(name)
    if name in INTERNAL_PARAMETERS or (info is not None and info.context == "internal"):
        return "read-only, set at initdb/compile time"
    if info is None and "." not in name:
        return (
            "unknown parameter: this PostgreSQL's --describe-config does not list it (check the spelling; "
            "developer options such as zero_damaged_pages and session-only ones such as transaction_isolation, "
            "which a conf file silently ignores, are not accepted either)"
        )
    return None


def _library_entries(text: str) -> list[str]:
    return [part.strip().strip('"').strip() for part in text.split(",")]


def is_command(name: str, text: str) -> bool:
    """Does this parameter run an OS command or load code from an arbitrary path?"""
    if name in COMMANDS:
        return True
    return name in PRELOAD_LISTS and any("/" in entry for entry in _library_entries(text))


def _command_rule(name: str, text: str, layer: Layer, allow_commands_from_dcs: bool) -> str | None:
    if layer == "dynamic" and name in LOCAL_ONLY:
        return ("node-local TLS setting (the appliance serves its cluster certificate): set it in the node's "
                "own YAML/env, not in the cluster-wide (DCS) configuration")
    if layer == "dynamic" and not allow_commands_from_dcs and is_command(name, text):
        return (
            "runs an OS command or loads code from a path: accepted from the node's local YAML/env only, "
            "not from the cluster-wide (DCS) configuration"
        )
    return None


def _check_one(
    raw: Any, value: Any, layer: Layer, catalog: GucCatalog, allow: bool, seen: set[str]
) -> tuple[str, str] | GucProblem:
    """(lower-case name, rendered value) or the first problem of this parameter."""
    name = str(raw)
    lower = normalize_name(raw) if isinstance(raw, str) else None
    if lower is None:
        return GucProblem(name, "not a parameter name: use letters, digits and _ (or prefix.name for extensions)")
    if lower in seen:
        return GucProblem(name, f"{lower} is given more than once (names are case-insensitive)")
    seen.add(lower)
    reason = _name_rule(lower, catalog)
    if reason is None:
        try:
            text = render_value(value)
        except ValueError as e:
            return GucProblem(name, str(e))
        reason = value_problem(text) or _command_rule(lower, text, layer, allow)
    return GucProblem(name, reason) if reason else (lower, text)


def validate_parameters(
    params: Mapping[str, Any],
    *,
    layer: Layer,
    catalog: GucCatalog,
    checker: ValueChecker,
    allow_commands_from_dcs: bool = False,
) -> list[GucProblem]:
    """Every problem of `params` (empty: all may be written). None means "unset" and is skipped:
    removing a parameter must always be possible, and nothing is rendered for it."""
    problems: list[GucProblem] = []
    values: dict[str, str] = {}
    given: dict[str, str] = {}
    seen: set[str] = set()
    for raw, value in params.items():
        if value is None:
            continue
        outcome = _check_one(raw, value, layer, catalog, allow_commands_from_dcs, seen)
        if isinstance(outcome, GucProblem):
            problems.append(outcome)
        else:
            values[outcome[0]] = outcome[1]
            given[outcome[0]] = raw
    if values:
        problems += [GucProblem(given.get(p.name, p.name), p.reason) for p in checker.check(values)]
    return problems


def needs_restart(name: str, catalog: GucCatalog) -> bool:
    """A change takes effect only after a restart (context postmaster). Custom (extension) names are
    unknown until their library is loaded: confirm with pg_settings.pending_restart after a reload."""
    info = catalog.get(name)
    return info is not None and info.context == "postmaster"


@dataclass
class FakeValueChecker:
    """For unit tests: `reject(name, value)` returns a reason or None; records every call."""

    reject: Callable[[str, str], str | None] = lambda _name, _value: None
    calls: list[dict[str, str]] = field(default_factory=list)

    def check(self, values: Mapping[str, str]) -> list[GucProblem]:
        self.calls.append(dict(values))
        return [GucProblem(n, r) for n, v in values.items() if (r := self.reject(n, v)) is not None]


_MESSAGE_RE = re.compile(r"\b(?:FATAL|ERROR|PANIC|DETAIL|HINT):\s+(.*)$")
_PARAM_RE = re.compile(r'parameter "([^"]+)"')
# Not runtime-computed: with shared_memory_size PostgreSQL 15 would go on to load
# shared_preload_libraries before answering; with this one it only parses the parameters.
_PROBE = "server_version_num"


def _refusal(result: CommandResult) -> str:
    lines = result.output.splitlines()
    found = [m.group(1).strip() for line in lines if (m := _MESSAGE_RE.search(line))]
    if not found:  # e.g. a log_destination given with it sent the message elsewhere
        found = [line.strip() for line in lines if line.strip() and " LOG: " not in line][-2:]
    return "PostgreSQL refused it: " + (" ".join(found) or f"exit status {result.returncode}")


class PostgresValueChecker:
    """Checks values with `postgres -D <empty dir> -c name=value ... -C server_version_num`.

    Runs as PostgreSQL's user through Runner, never a shell; parses parameters and exits, starts
    nothing. PostgreSQL reports only the first bad value per run, so after a failure every
    parameter is run alone (about 10 ms each). Cross-parameter checks done at server start
    (wal_level=minimal with max_wal_senders > 0) are not covered.
    """

    def __init__(self, bin_dir: str, runner: Runner, *, work_parent: str | None = None, timeout: float = 10.0):
        self.binary = os.path.join(bin_dir, "postgres")
        self.runner = runner
        self.work_parent = work_parent  # must be reachable by PostgreSQL's user (not /tmp/pytest-of-root)
        self.timeout = timeout

    def check(self, values: Mapping[str, str]) -> list[GucProblem]:
        if not values:
            return []
        with self._scratch_dir() as work:
            together = self._run(work, values)
            if together.ok:
                return []
            if len(values) == 1:
                return [GucProblem(next(iter(values)), _refusal(together))]
            problems = [
                GucProblem(name, _refusal(alone))
                for name, value in values.items()
                if not (alone := self._run(work, {name: value})).ok
            ]
        if not problems:  # each alone is fine, together not
            named = _PARAM_RE.search(together.output)
            problems.append(GucProblem(named.group(1).lower() if named else "*", _refusal(together)))
        return problems

    def _run(self, work: str, values: Mapping[str, str]) -> CommandResult:
        args = [self.binary, "-D", work]
        for name, value in values.items():
            args += ["-c", f"{name}={value}"]
        args += ["-C", _PROBE]
        try:
            result = self.runner.run(args, timeout=self.timeout)
        except OSError as e:
            raise GucCheckError(f"cannot run {self.binary} to check parameters: {e}") from e
        if result.returncode < 0:
            raise GucCheckError(f"{self.binary} did not finish checking parameters: {result.tail(3)}")
        return result

    @contextlib.contextmanager
    def _scratch_dir(self) -> Iterator[str]:
        """A fresh 0700 dir owned by PostgreSQL's user with an empty postgresql.conf, removed after."""
        path = tempfile.mkdtemp(prefix="pgappliance-guc-", dir=self.work_parent)
        try:
            conf = os.path.join(path, "postgresql.conf")
            with open(conf, "w", encoding="utf-8"):
                pass
            owner = self.runner.owner
            if owner is not None and os.geteuid() == 0:
                owner.apply(path)
                owner.apply(conf)
            os.chmod(path, 0o700)
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
