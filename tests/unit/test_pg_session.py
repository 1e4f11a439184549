"""The loop's kept PostgreSQL connection: reused, replaced after a break, cut at its deadline, one thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

import psycopg
import pytest

from appliance.postgres.session import DeadlineExceeded, Session


class FakeConn:
    """Stands in for a psycopg connection: a socket pair, the far end played by the test."""

    def __init__(self) -> None:
        self.sock, self.server = socket.socketpair()
        self.closed = False
        self.broken = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        self.server.close()

    def query(self) -> str:
        """One round trip, as libpq does it: a server that has gone away breaks the connection."""
        if self.broken or self.closed:
            raise psycopg.OperationalError("the connection is lost")
        try:
            self.sock.sendall(b"Q")
            answer = self.sock.recv(1)
        except OSError:  # EPIPE, ECONNRESET: libpq reports these as a lost connection too
            answer = b""
        if not answer:
            self.broken = True
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return answer.decode()


class Server:
    """Opens FakeConns and answers each query, unless told to stay silent (a frozen server)."""

    def __init__(self) -> None:
        self.conns: list[FakeConn] = []
        self.frozen = False
        self.refuse = False

    def connect(self) -> Any:
        if self.refuse:
            raise psycopg.OperationalError("connection refused")
        conn = FakeConn()
        self.conns.append(conn)
        threading.Thread(target=self._answer, args=(conn,), daemon=True).start()
        return conn

    def _answer(self, conn: FakeConn) -> None:
        try:
            while conn.server.recv(1):
                if not self.frozen:
                    conn.server.sendall(b"A")
        except OSError:
            pass

    def restart(self) -> None:
        """Every open connection is dropped by the server, as by a PostgreSQL restart."""
        for conn in self.conns:
            # shutdown() first: a bare close() does not wake the answering thread blocked in recv().
            with contextlib.suppress(OSError):
                conn.server.shutdown(socket.SHUT_RDWR)
            conn.server.close()


def query(conn: Any) -> str:
    return str(conn.query())


def test_one_connection_serves_every_use() -> None:
    server = Server()
    session = Session(server.connect)
    assert [session.run(query) for _ in range(5)] == ["A"] * 5
    assert session.opened == 1


def test_an_sql_error_keeps_the_connection() -> None:
    server = Server()
    session = Session(server.connect)
    session.run(query)

    def bad(conn: Any) -> None:
        raise psycopg.errors.UndefinedTable("relation does not exist")

    with pytest.raises(psycopg.errors.UndefinedTable):
        session.run(bad)
    assert session.run(query) == "A" and session.opened == 1


def test_a_connection_dropped_while_idle_is_replaced_within_the_same_use() -> None:
    server = Server()
    session = Session(server.connect)
    session.run(query)
    server.restart()
    assert session.run(query) == "A"  # the caller sees no error after a PostgreSQL restart
    assert session.opened == 2 and server.conns[0].closed


def test_a_new_connection_that_fails_is_not_retried() -> None:
    server = Server()
    session = Session(server.connect)
    calls = []

    def breaks(conn: Any) -> None:
        calls.append(conn)
        conn.broken = True
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    with pytest.raises(psycopg.OperationalError):
        session.run(breaks)
    assert len(calls) == 1 and session.opened == 1
    assert session.run(query) == "A" and session.opened == 2


def test_a_refused_connection_raises_and_the_next_use_tries_again() -> None:
    server = Server()
    server.refuse = True
    session = Session(server.connect)
    with pytest.raises(psycopg.OperationalError):
        session.run(query)
    server.refuse = False
    assert session.run(query) == "A"


def test_a_frozen_server_costs_one_deadline_then_the_connection_is_replaced() -> None:
    server = Server()
    session = Session(server.connect, timeout=0.3)
    session.run(query)
    server.frozen = True
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"did not answer within 0\.3s"):
        session.run(query)
    assert 0.25 < time.monotonic() - started < 2.0
    assert server.conns[0].closed
    server.frozen = False
    assert session.run(query) == "A" and session.opened == 2


def test_a_quick_answer_is_never_cut_later() -> None:
    server = Server()
    session = Session(server.connect, timeout=0.5)
    for _ in range(3):
        assert session.run(query) == "A"
    time.sleep(0.8)  # a timer left running would cut the idle connection now
    assert not server.conns[0].broken and session.run(query) == "A" and session.opened == 1


def test_a_session_belongs_to_one_thread() -> None:
    server = Server()
    session = Session(server.connect)
    session.run(query)
    errors: list[BaseException] = []

    def other() -> None:
        try:
            session.run(query)
        except RuntimeError as exc:
            errors.append(exc)

    worker = threading.Thread(target=other)
    worker.start()
    worker.join()
    assert len(errors) == 1 and "another thread" in str(errors[0])
