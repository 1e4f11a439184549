"""haproxy.cfg rendering, checked by haproxy itself (``haproxy -c``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.config.schema import Haproxy
from appliance.proxy.haproxy import ProxyNode, ProxySettings, haproxy_command, render_haproxy_cfg

NODES = [ProxyNode(f"node{i}", f"127.0.2.{i}", 5432, f"127.0.2.{i}", 8008) for i in (1, 2, 3)]


def _settings(tmp_path: Path, **kw: object) -> ProxySettings:
    return ProxySettings(bind_address="127.0.0.1", run_dir=str(tmp_path), **kw)  # type: ignore[arg-type]


def _section(text: str, name: str) -> list[str]:
    block = ("\n" + text).split(f"\n{name}\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines()]


def test_primary_and_replica_checks(tmp_path: Path) -> None:
    text = render_haproxy_cfg(NODES, _settings(tmp_path, replica_max_lag="32MB"))
    primary = _section(text, "listen primary")
    assert "bind 127.0.0.1:5000" in primary
    assert "option httpchk" in primary
    assert "http-check send meth OPTIONS uri /primary" in primary
    assert "http-check expect status 200" in primary
    assert "server node2 127.0.2.2:5432 maxconn 100 check port 8008 addr 127.0.2.2" in primary
    replicas = _section(text, "listen replicas")
    assert "bind 127.0.0.1:5001" in replicas
    assert "balance roundrobin" in replicas
    assert "http-check send meth GET uri /replica?lag=32MB" in replicas
    stats = _section(text, "listen stats")
    assert "bind 127.0.0.1:7000" in stats and "stats uri /" in stats
    assert "http-request use-service prometheus-exporter if { path /metrics }" in stats


def test_timings_admin_socket_and_no_pidfile(tmp_path: Path) -> None:
    text = render_haproxy_cfg(NODES, _settings(tmp_path))
    assert (
        "default-server inter 1s fastinter 250ms downinter 250ms fall 3 rise 1 on-marked-down shutdown-sessions"
    ) in _section(text, "defaults")
    assert f"stats socket {tmp_path}/haproxy.sock mode 660 level admin expose-fd listeners" in _section(text, "global")
    assert "pidfile" not in text


def test_settings_from_the_haproxy_section(tmp_path: Path) -> None:
    section = Haproxy(bind_address="10.1.1.1", primary_port=6000, replica_port=6001, stats_port=6002)
    settings = ProxySettings.from_config(section, str(tmp_path))
    text = render_haproxy_cfg(NODES, settings)
    assert "bind 10.1.1.1:6000" in text and "bind 10.1.1.1:6001" in text and "bind 10.1.1.1:6002" in text


def test_bad_node_lists_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one node"):
        render_haproxy_cfg([], _settings(tmp_path))
    with pytest.raises(ValueError, match="duplicate"):
        render_haproxy_cfg([NODES[0], NODES[0]], _settings(tmp_path))
    with pytest.raises(ValueError, match="server name"):
        render_haproxy_cfg([ProxyNode("a b", "h", 1, "h", 2)], _settings(tmp_path))


def test_command_runs_master_worker_in_the_foreground() -> None:
    assert haproxy_command("/x/haproxy.cfg", "/usr/sbin/haproxy") == [
        "/usr/sbin/haproxy",
        "-W",
        "-db",
        "-f",
        "/x/haproxy.cfg",
    ]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0", "::1"])
def test_haproxy_accepts_the_rendered_config(tmp_path: Path, bind: str) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(render_haproxy_cfg(NODES, ProxySettings(bind_address=bind, run_dir=str(tmp_path))))
    result = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr
