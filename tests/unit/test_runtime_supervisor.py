"""supervisord.conf rendering: sections, priorities, log targets, user switch, FATAL listener."""

from __future__ import annotations

import configparser
import os
import shlex
import sys
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from appliance.config.schema import LocalConfig
from appliance.runtime.node import node_supervisor_spec
from appliance.runtime.supervisor import LogTarget, Program, SupervisorSpec, render_supervisord_conf


def _config(tmp_path: Path) -> LocalConfig:
    return LocalConfig.model_validate(
        {
            "name": "node1",
            "appliance": {"run_dir": str(tmp_path / "run")},
            "etcd": {"data_dir": str(tmp_path / "etcd"), "advertise_peer": "10.0.0.1:2380"},
        }
    )


def _parse(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return parser


def test_full_node_has_every_program_in_priority_order(tmp_path: Path) -> None:
    spec = node_supervisor_spec(_config(tmp_path), tmp_path / "node.yml", user="postgres")
    conf = _parse(render_supervisord_conf(spec))
    programs = [s for s in conf.sections() if s.startswith(("program:", "fcgi-program:"))]
    assert programs == ["program:etcd", "program:fencer", "program:haproxy", "fcgi-program:api", "program:manager"]
    assert [conf.getint(s, "priority") for s in programs] == [10, 15, 30, 40, 50]
    assert conf.get("supervisord", "user") == "postgres"
    assert conf.get("supervisord", "nodaemon") == "true"
    assert 'HOME="' in conf.get("supervisord", "environment")
    assert conf.get("unix_http_server", "file") == str(tmp_path / "run" / "supervisor.sock")
    assert conf.get("supervisorctl", "serverurl") == f"unix://{tmp_path}/run/supervisor.sock"


def test_supervisord_holds_the_api_socket_across_restarts(tmp_path: Path) -> None:
    """A killed API must not leave port 8008 closed: supervisord binds it and passes it as fd 0."""
    conf = _parse(render_supervisord_conf(node_supervisor_spec(_config(tmp_path), tmp_path / "node.yml")))
    api = dict(conf.items("fcgi-program:api"))
    assert api["socket"].startswith("tcp://") and api["socket"].endswith(":8008")
    assert api["process_name"] == "api" and api["numprocs"] == "1"
    argv = shlex.split(api["command"])
    assert argv[-2:] == ["--listen-fd", "0"]


def test_an_ipv6_listen_is_bound_by_the_api_itself() -> None:
    from appliance.runtime.node import held_socket

    assert held_socket("0.0.0.0:8008") == "0.0.0.0:8008"
    assert held_socket("127.0.2.1:8008") == "127.0.2.1:8008"
    assert held_socket("[::]:8008") is None and held_socket("::1:8008") is None


def test_manager_stanza_leaves_postgres_alone(tmp_path: Path) -> None:
    conf = _parse(render_supervisord_conf(node_supervisor_spec(_config(tmp_path), tmp_path / "node.yml")))
    manager = dict(conf.items("program:manager"))
    assert manager["stopsignal"] == "TERM"
    assert manager["stopwaitsecs"] == "45"
    assert manager["stopasgroup"] == "false" and manager["killasgroup"] == "false"
    assert manager["autorestart"] == "true"
    argv = shlex.split(manager["command"])
    assert argv == [sys.executable, "-m", "appliance", "manager", "--config", str((tmp_path / "node.yml").resolve())]
    assert not any(s == "program:postgres" for s in conf.sections())


def test_fencer_stanza_watches_the_data_dir_and_comes_with_every_manager(tmp_path: Path) -> None:
    config = _config(tmp_path)
    conf = _parse(render_supervisord_conf(node_supervisor_spec(config, tmp_path / "node.yml",
                                                               programs=("manager",))))
    assert [s for s in conf.sections() if s.startswith("program:")] == ["program:fencer", "program:manager"]
    argv = shlex.split(dict(conf.items("program:fencer"))["command"])
    assert argv[:3] == [sys.executable, "-m", "appliance.fence.daemon"]
    assert argv[argv.index("--data-dir") + 1] == config.postgresql.data_dir
    assert argv[argv.index("--run-dir") + 1] == config.appliance.run_dir


def test_stdio_logs_have_rotation_off(tmp_path: Path) -> None:
    conf = _parse(render_supervisord_conf(node_supervisor_spec(_config(tmp_path), "n.yml")))
    assert conf.get("supervisord", "logfile") == "/dev/stdout"
    assert conf.get("supervisord", "logfile_maxbytes") == "0"
    for name in ("etcd", "manager", "haproxy", "api"):
        section = f"fcgi-program:{name}" if name == "api" else f"program:{name}"
        assert conf.get(section, "stdout_logfile") == "/dev/stdout"
        assert conf.get(section, "stdout_logfile_maxbytes") == "0"
        assert conf.get(section, "stderr_logfile") == "/dev/stderr"
        assert conf.get(section, "stderr_logfile_maxbytes") == "0"


def test_file_logs_go_to_one_file_per_program(tmp_path: Path) -> None:
    spec = node_supervisor_spec(_config(tmp_path), "n.yml", log=LogTarget.files(tmp_path / "log"), nodaemon=False)
    conf = _parse(render_supervisord_conf(spec))
    assert conf.get("supervisord", "logfile") == str(tmp_path / "log" / "supervisord.log")
    assert conf.get("supervisord", "nodaemon") == "false"
    assert conf.get("program:etcd", "stdout_logfile") == str(tmp_path / "log" / "etcd.log")
    assert conf.get("program:etcd", "redirect_stderr") == "true"
    assert conf.get("eventlistener:fatal_listener", "stderr_logfile") == str(tmp_path / "log" / "fatal_listener.log")


def test_program_selection_and_listener_watch_list(tmp_path: Path) -> None:
    spec = node_supervisor_spec(_config(tmp_path), "n.yml", programs=["etcd"])
    conf = _parse(render_supervisord_conf(spec))
    assert [s for s in conf.sections() if s.startswith("program:")] == ["program:etcd"]
    listener = dict(conf.items("eventlistener:fatal_listener"))
    assert listener["events"] == "PROCESS_STATE_FATAL"
    argv = shlex.split(listener["command"])
    assert argv[:3] == [sys.executable, "-m", "appliance.runtime.fatal_listener"]
    assert argv[argv.index("--programs") + 1] == "etcd"
    assert argv[argv.index("--marker") + 1] == str(tmp_path / "run" / "supervisord.fatal")


def test_no_user_line_without_user(tmp_path: Path) -> None:
    conf = _parse(render_supervisord_conf(node_supervisor_spec(_config(tmp_path), "n.yml", user=None)))
    assert not conf.has_option("supervisord", "user")


def test_percent_signs_are_escaped_and_supervisord_accepts_the_file(tmp_path: Path) -> None:
    program = Program("etcd", ["/bin/echo", "100%"], 10, environment={"X": "a%b"})
    spec = SupervisorSpec(run_dir=str(tmp_path), programs=[program], log=LogTarget.files(tmp_path))
    path = tmp_path / "supervisord.conf"
    path.write_text(render_supervisord_conf(spec))
    options = ServerOptions()
    options.configfile = str(path)
    options.process_config(do_usage=False)
    (group,) = [g for g in options.process_group_configs if g.name == "etcd"]
    assert group.process_configs[0].command == "/bin/echo 100%"
    assert group.process_configs[0].environment == {"X": "a%b"}
    assert options.pidfile == os.path.join(tmp_path, "supervisord.pid")


def test_duplicate_programs_and_quotes_are_refused(tmp_path: Path) -> None:
    twice = [Program("etcd", ["a"], 10), Program("etcd", ["b"], 10)]
    with pytest.raises(ValueError, match="duplicate"):
        render_supervisord_conf(SupervisorSpec(run_dir=str(tmp_path), programs=twice))
    quoted = [Program("etcd", ["a"], 10, environment={"X": 'say "hi"'})]
    with pytest.raises(ValueError, match="quotes"):
        render_supervisord_conf(SupervisorSpec(run_dir=str(tmp_path), programs=quoted))


def test_the_socket_keeper_is_loaded_when_a_program_has_a_held_socket(tmp_path: Path) -> None:
    conf = _parse(render_supervisord_conf(node_supervisor_spec(_config(tmp_path), tmp_path / "node.yml")))
    assert conf.get("rpcinterface:appliance_sockets", "supervisor.rpcinterface_factory") == \
        "appliance.runtime.socket_keeper:make_keeper"


def test_the_socket_keeper_holds_every_fcgi_socket() -> None:
    from supervisor.process import FastCGIProcessGroup

    from appliance.runtime.socket_keeper import make_keeper

    class Manager:
        def __init__(self) -> None:
            self.refs = 0

        def get_socket(self) -> object:
            self.refs += 1
            return object()

    fcgi = FastCGIProcessGroup.__new__(FastCGIProcessGroup)
    fcgi.socket_manager = Manager()  # type: ignore[assignment]

    class Supervisord:
        process_groups = {"api": fcgi, "manager": object()}

    keeper = make_keeper(Supervisord())
    assert keeper.held() == 1 and fcgi.socket_manager.refs == 1  # type: ignore[attr-defined]
