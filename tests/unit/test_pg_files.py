"""The conf files, markers and data-dir handling of the PostgreSQL adapter (no PostgreSQL needed)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from appliance.postgres import ConnInfo, DataDirState, PgConfig, files
from appliance.postgres.controldata import data_dir_state


def make_cfg(tmp_path: Path) -> PgConfig:
    return PgConfig(name="n1", data_dir=str(tmp_path / "data"), listen_port=5433, socket_dir="/run/pg", run_as=None)


def test_write_file_is_atomic_private_and_reports_change(tmp_path: Path) -> None:
    path = str(tmp_path / "f.conf")
    assert files.write_file(path, "a\n", None) is True
    assert files.write_file(path, "a\n", None) is False
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert files.write_file(path, "b\n", None) is True
    assert Path(path).read_text() == "b\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.conf"]


def test_render_and_parse_roundtrip(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    conninfo = ConnInfo("10.0.0.2", 5432, "rep", "it's\\secret", application_name="n1").dsn()
    params = {"work_mem": "8MB", "port": 1, "wal_level": "minimal", "jit": False, "archive_command": None}
    text = files.render_appliance_conf(cfg, params, conninfo, "n1", 'FIRST 1 ("n2")')
    parsed = files.parse_appliance_conf(text)
    assert parsed["primary_conninfo"] == conninfo
    assert parsed["port"] == "5433"  # PgConfig wins over a parameter
    assert parsed["wal_level"] == "replica"  # minimal cannot replicate
    assert parsed["jit"] == "off" and "archive_command" not in parsed
    assert parsed["synchronous_standby_names"] == 'FIRST 1 ("n2")'
    assert parsed["unix_socket_directories"] == "/run/pg"
    assert (parsed["hot_standby"], parsed["wal_log_hints"], parsed["recovery_target_timeline"]) == (
        "on",
        "on",
        "latest",
    )
    assert parsed["max_wal_senders"] == "10" and parsed["work_mem"] == "8MB"
    assert parsed["unix_socket_permissions"] == "0770"
    assert (parsed["wal_receiver_status_interval"], parsed["wal_retrieve_retry_interval"]) == ("1s", "1s")
    assert files.render_appliance_conf(cfg, params, conninfo, "n1", 'FIRST 1 ("n2")') == text


def test_effective_parameters_override_defaults() -> None:
    params = files.effective_parameters({"max_wal_senders": 20, "wal_level": "logical", "hba_file": "/x"})
    assert params["max_wal_senders"] == "20" and params["wal_level"] == "logical"
    assert "hba_file" not in params


def test_include_line_added_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "postgresql.conf").write_text("max_connections = 100")
    assert files.ensure_include(str(data), None) is True
    assert files.ensure_include(str(data), None) is False
    text = (data / "postgresql.conf").read_text()
    assert text.count("include 'postgresql.appliance.conf'") == 1
    assert text.startswith("max_connections = 100\n")


def test_standby_signal_and_hba(tmp_path: Path) -> None:
    assert files.set_standby_signal(str(tmp_path), True, None) is True
    assert files.set_standby_signal(str(tmp_path), True, None) is False
    assert (tmp_path / "standby.signal").exists()
    assert files.set_standby_signal(str(tmp_path), False, None) is True
    assert not (tmp_path / "standby.signal").exists()
    hba = files.render_hba(["local all all trust", "host all all all scram-sha-256"])
    assert hba.splitlines()[1:] == ["local all all trust", "host all all all scram-sha-256"]


def test_data_dir_states_and_marker(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert data_dir_state(str(data)) is DataDirState.MISSING
    data.mkdir()
    assert data_dir_state(str(data)) is DataDirState.EMPTY
    (data / "junk").write_text("x")
    assert data_dir_state(str(data)) is DataDirState.INVALID
    (data / "PG_VERSION").write_text("15\n")
    (data / "global").mkdir()
    (data / "global" / "pg_control").write_bytes(b"\0")
    assert data_dir_state(str(data)) is DataDirState.VALID
    files.set_incomplete(str(data), "basebackup")
    assert files.incomplete_marker(str(data)) == str(tmp_path / ".data.pgappliance-incomplete")
    assert data_dir_state(str(data) + "/") is DataDirState.INCOMPLETE
    files.clear_incomplete(str(data))
    files.clear_incomplete(str(data))
    assert data_dir_state(str(data)) is DataDirState.VALID


def test_wipe_keeps_dir_and_empties_linked_wal(tmp_path: Path) -> None:
    data, wal = tmp_path / "data", tmp_path / "wal"
    (data / "base" / "1").mkdir(parents=True)
    (data / "base" / "1" / "f").write_text("x")
    wal.mkdir()
    (wal / "000000010000000000000001").write_text("w")
    os.symlink(wal, data / "pg_wal")
    outside = tmp_path / "keep.txt"
    outside.write_text("k")
    files.wipe_data_dir(str(data), None)
    assert list(data.iterdir()) == [] and list(wal.iterdir()) == []
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert outside.read_text() == "k"


def test_passfile_escapes_and_is_removed(tmp_path: Path) -> None:
    conns = [ConnInfo("h", 5432, "u:x", "p\\w:d"), ConnInfo("h2", 1, "nopass")]
    assert files.passfile_content(conns) == "h:5432:*:u\\:x:p\\\\w\\:d\n"
    with files.temp_passfile(conns, str(tmp_path), None) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert Path(path).read_text() == "h:5432:*:u\\:x:p\\\\w\\:d\n"
    assert not os.path.exists(path)


def test_managed_parameter_warns_only_when_it_differs(caplog: pytest.LogCaptureFixture) -> None:
    managed = {"port": "5433", "wal_log_hints": "on"}
    with caplog.at_level(logging.WARNING, logger="appliance.postgres.files"):
        files.effective_parameters({"port": 5433, "wal_log_hints": True}, managed)
        assert caplog.records == []
        files.effective_parameters({"port": 5432}, managed)
    assert "port=5432 ignored" in caplog.text
