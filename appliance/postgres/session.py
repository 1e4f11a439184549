"""One long-lived SQL connection for one thread: reopened after it breaks, and no use of it outlives its deadline.

statement_timeout (set by the connect function) bounds a statement on a live server; it cannot
stop a server that is frozen (SIGSTOP, a hung disk under a lock, ...), and a kept connection never
meets libpq's connect_timeout again. So each use also runs under a client-side deadline: when it
passes, the socket is shut down, the blocked read returns at once, and the connection is dropped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")
Connector = Callable[[], psycopg.Connection[Any]]


class DeadlineExceeded(psycopg.OperationalError):
    """PostgreSQL did not answer within the deadline; the connection was cut."""


@contextlib.contextmanager
def deadline(conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
    """Cut ``conn`` (shut its socket down) if the block still runs after ``seconds``; the block then
    fails with DeadlineExceeded instead of waiting for an answer that may never come."""
    lock = threading.Lock()
    state = {"done": False, "cut": False}

    def cut() -> None:
        with lock:
            if state["done"]:
                return
            state["cut"] = True
            # A duplicate descriptor: shutdown() acts on the socket itself, close() only on the copy.
            with contextlib.suppress(OSError, ValueError), socket.socket(fileno=os.dup(conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    except psycopg.Error as exc:
        with lock:
            state["done"] = True
        timer.cancel()
        if state["cut"]:
            raise DeadlineExceeded(f"PostgreSQL did not answer within {seconds:g}s") from exc
        raise
    finally:
        with lock:
            state["done"] = True
        timer.cancel()
    if state["cut"]:  # the answer came just as the socket was cut: the connection is unusable anyway
        raise DeadlineExceeded(f"PostgreSQL did not answer within {seconds:g}s")


def lost(conn: psycopg.Connection[Any]) -> bool:
    """True when ``conn`` can no longer be used (server gone, socket cut); an SQL error leaves it usable."""
    return bool(conn.closed or conn.broken)


class Session:
    """Runs work on one kept connection. After a break the next use opens a new one; a connection
    that broke while idle (PostgreSQL restarted since the last use) is replaced at once, once.

    psycopg connections must not be used by two threads at a time: a session belongs to the first
    thread that uses it, and another thread gets a RuntimeError (it must open a connection of its own).
    """

    def __init__(self, connect: Connector, timeout: float = 2.0) -> None:
        self._connect = connect
        self.timeout = timeout  # the client-side deadline of one use, connection excluded
        self._conn: psycopg.Connection[Any] | None = None
        self._owner: int | None = None
        self.opened = 0  # connections opened so far (tests, diagnostics)

    def run(self, work: Callable[[psycopg.Connection[Any]], T], timeout: float | None = None) -> T:
        """``work(conn)``'s result; raises psycopg.Error (DeadlineExceeded when the deadline passed)."""
        self._claim()
        limit = self.timeout if timeout is None else timeout
        kept = self._conn is not None
        conn = self._conn if self._conn is not None else self._open()
        try:
            with deadline(conn, limit):
                return work(conn)
        except DeadlineExceeded:
            self.close()
            raise
        except psycopg.Error:
            if not lost(conn):
                raise  # an SQL error: the connection stays usable
            self.close()
            if not kept:
                raise
        # The kept connection was dead before we used it: once more on a fresh one.
        conn = self._open()
        try:
            with deadline(conn, limit):
                return work(conn)
        except psycopg.Error:
            if lost(conn):
                self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _open(self) -> psycopg.Connection[Any]:
        self._conn = self._connect()
        self.opened += 1
        return self._conn

    def _claim(self) -> None:
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            raise RuntimeError("this PostgreSQL session belongs to another thread: open a connection of your own")
