"""One parser for host:port and conn_url: /cluster, the CLI, the replication source and supervisord agree."""

from __future__ import annotations

import pytest

from appliance.cli.ctl.formatting import member_rows
from appliance.core.model import ClusterView, Member
from appliance.manager.publish import cluster_doc
from appliance.net.address import conn_url, conn_url_address, host_and_port, parse_conn_url, split_host_port
from appliance.runtime.node import held_socket

# conn_url -> (host, port) as published (None: not said), and what a connection uses (None: refused).
CONN_URLS: list[tuple[str, tuple[str | None, int | None], tuple[str, int] | None]] = [
    ("postgres://node1:5432/postgres", ("node1", 5432), ("node1", 5432)),
    ("postgresql://node2/postgres", ("node2", None), ("node2", 5432)),
    ("postgres://[::1]:5433/postgres", ("::1", 5433), ("::1", 5433)),
    ("postgres://[::1]/postgres", ("::1", None), ("::1", 5432)),
    ("postgres://user@10.0.0.1:6000/db?sslmode=require", ("10.0.0.1", 6000), ("10.0.0.1", 6000)),
    ("postgres://node1:abc/postgres", ("node1", None), None),
    ("node3:5432", ("node3", 5432), None),
    ("http://node2:5432", ("node2", 5432), None),
    ("", (None, None), None),
]


@pytest.mark.parametrize(("url", "published", "connect"), CONN_URLS)
def test_every_reader_of_a_conn_url_agrees(url: str, published: tuple[str | None, int | None],
                                           connect: tuple[str, int] | None) -> None:
    assert conn_url_address(url) == published
    if connect is None:
        with pytest.raises(ValueError, match="postgres://host:port"):
            parse_conn_url(url)
    else:
        assert parse_conn_url(url) == connect
    view = ClusterView(members=(Member("n1", conn_url=url),))
    entry = cluster_doc("demo", view)["members"][0]
    assert (entry["host"], entry["port"]) == published
    columns, rows = member_rows(view)
    host, port = published
    shown = f"{host}:{port}" if host and port not in (None, 5432) else (host or "")
    assert rows[0][columns.index("Host")] == shown


@pytest.mark.parametrize("host", ["node1", "10.0.0.1", "::1", "fe80::1"])
def test_conn_url_round_trips(host: str) -> None:
    assert parse_conn_url(conn_url(host, 5433)) == (host, 5433)


# address -> (host, port text), split_host_port(address, 6000), held_socket(address)
ADDRESSES: list[tuple[str, tuple[str, str | None], tuple[str, int], str | None]] = [
    ("0.0.0.0:8008", ("0.0.0.0", "8008"), ("0.0.0.0", 8008), "0.0.0.0:8008"),
    ("node1:8008", ("node1", "8008"), ("node1", 8008), "node1:8008"),
    ("[::]:8008", ("::", "8008"), ("::", 8008), None),
    ("[::1]", ("::1", None), ("::1", 6000), None),
    ("node1", ("node1", None), ("node1", 6000), None),
]


@pytest.mark.parametrize(("address", "parts", "split", "held"), ADDRESSES)
def test_every_reader_of_host_port_agrees(address: str, parts: tuple[str, str | None], split: tuple[str, int],
                                          held: str | None) -> None:
    assert host_and_port(address) == parts
    assert split_host_port(address, 6000) == split
    assert held_socket(address) == held
