"""The etcd member's command line and environment."""

from __future__ import annotations

import pytest

from appliance.config.schema import LocalConfig
from appliance.runtime.etcd_server import client_urls, etcd_command

CLUSTER = "node1=http://10.0.0.1:2380,node2=http://10.0.0.2:2380,node3=http://10.0.0.3:2380"


def _config(**etcd: object) -> LocalConfig:
    base = {
        "data_dir": "/data/etcd",
        "listen_client": "0.0.0.0:2379",
        "listen_peer": "0.0.0.0:2380",
        "advertise_client": "10.0.0.1:2379",
        "advertise_peer": "10.0.0.1:2380",
        "initial_cluster": CLUSTER,
        "initial_cluster_token": "tok-1",
        **etcd,
    }
    return LocalConfig.model_validate(
        {"name": "node1", "etcd": base, "etcd3": {"hosts": ["10.0.0.1:2379", "10.0.0.2:2379"]}}
    )


def _flags(argv: list[str]) -> dict[str, str]:
    return dict(zip(argv[1::2], argv[2::2], strict=True))


def test_flags_come_from_the_etcd_section() -> None:
    cmd = etcd_command(_config(), etcd_bin="/usr/bin/etcd", machine="x86_64")
    assert cmd.argv[0] == "/usr/bin/etcd"
    assert _flags(cmd.argv) == {
        "--name": "node1",
        "--data-dir": "/data/etcd",
        "--listen-client-urls": "http://0.0.0.0:2379",
        "--advertise-client-urls": "http://10.0.0.1:2379",
        "--listen-peer-urls": "http://0.0.0.0:2380",
        "--initial-advertise-peer-urls": "http://10.0.0.1:2380",
        "--initial-cluster": CLUSTER,
        "--initial-cluster-token": "tok-1",
        "--initial-cluster-state": "new",
        "--heartbeat-interval": "100",
        "--election-timeout": "1000",
    }
    assert cmd.env == {"ETCD_AUTO_COMPACTION_RETENTION": "1", "ETCD_LOGGER": "zap", "ETCD_LOG_OUTPUTS": "stderr"}


def test_arm64_needs_the_unsupported_arch_switch() -> None:
    assert etcd_command(_config(), machine="aarch64").env["ETCD_UNSUPPORTED_ARCH"] == "arm64"


def test_rejoin_uses_existing_state_and_the_given_member_list() -> None:
    joined = "node2=http://10.0.0.2:2380,node1=http://10.0.0.1:2380"
    flags = _flags(etcd_command(_config(), "existing", cluster=joined).argv)
    assert flags["--initial-cluster-state"] == "existing"
    assert flags["--initial-cluster"] == joined


def test_empty_initial_cluster_means_just_this_member() -> None:
    flags = _flags(etcd_command(_config(initial_cluster="", name="solo")).argv)
    assert flags["--name"] == "solo"
    assert flags["--initial-cluster"] == "solo=http://10.0.0.1:2380"


def test_member_missing_from_the_cluster_list_is_refused() -> None:
    with pytest.raises(ValueError, match="does not list this member 'node9'"):
        etcd_command(_config(name="node9"))
    with pytest.raises(ValueError, match="must be equal"):
        etcd_command(_config(advertise_peer="10.9.9.9:2380"))


def test_client_urls() -> None:
    assert client_urls(_config()) == ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
