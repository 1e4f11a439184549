"""etcd membership through the DCS's own client (EtcdTransport/EtcdGateway) against a real TLS etcd with
auth: what a wiped member's rejoin and the CLI's no-quorum diagnosis ask."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from appliance.dcs.etcd_transport import EtcdMember, EtcdTransport
from appliance.runtime.etcd_join import EtcdGateway, GatewayError
from tests.support.etcd import EtcdCluster

pytestmark = pytest.mark.integration


def add_when_healthy(gateway: EtcdGateway, url: str, peer: str) -> list[EtcdMember]:
    """etcd refuses a member add until every member has been connected for 5 s ("unhealthy cluster")."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return gateway.member_add(url, [peer])
        except GatewayError as exc:
            if "unhealthy cluster" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_member_list_status_add_remove_over_grpc_with_tls_and_auth(tmp_path: Path) -> None:
    with EtcdCluster(3, tmp_path / "etcd", tls=True) as etcd:
        assert etcd.tls is not None
        files = (etcd.tls.ca_file, etcd.tls.cert_file, etcd.tls.key_file)
        url = f"https://{etcd.endpoints[0]}"
        gateway = EtcdGateway(tls_files=files)
        members = gateway.member_list(url)
        assert sorted(m.name for m in members) == ["m0", "m1", "m2"]
        assert all(m.started and m.id.isdigit() for m in members)
        assert gateway.has_leader(url)
        transport = EtcdTransport(etcd.endpoints[1:], 2.0, tls=etcd.client_tls())
        try:
            assert transport.first_answering(1.0) == etcd.endpoints[1]
        finally:
            transport.close()

        base = ["etcdctl", f"--endpoints={url}", f"--cacert={files[0]}", f"--cert={files[1]}", f"--key={files[2]}"]
        for args in (["user", "add", "root:r00t"], ["auth", "enable"]):
            subprocess.run([*base, *args], check=True, capture_output=True)
        root = EtcdGateway(username="root", password="r00t", tls_files=files)
        peer = "https://127.0.0.1:1"  # never started: the cluster keeps its quorum (3 of 4)
        added = add_when_healthy(root, url, peer)
        new = [m for m in added if peer in m.peer_urls]
        assert len(added) == 4 and len(new) == 1 and not new[0].started
        root.member_remove(url, new[0].id)
        assert len(root.member_list(url)) == 3
        with pytest.raises(GatewayError, match="member remove"):
            root.member_remove(url, new[0].id)  # gone already: etcd says so, the error names the call
