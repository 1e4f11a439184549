"""The REST API's HTTP server: asyncio + h11, and only complete requests ever reach a thread.

Why not gunicorn: under its gthread worker a slow client (slowloris, a body that never arrives) holds a
worker thread, and a dozen of them starve the health checks HAProxy routes by (safety rule 7). Here the
event loop reads and parses every request (h11) under TOTAL deadlines and size limits, so a slow or
hostile client only costs a socket. A fully buffered request goes to the WSGI app in the thread pool of
its lane (``lane(method, path)``), each with a bounded queue, so long control requests (a switchover
polls for a minute) and DCS reads can never delay the health checks. The answer is collected in the
thread and written from the loop under a deadline: a client that does not read cannot hold a thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from wsgiref.types import WSGIApplication

import h11

from appliance.api.httpd_conn import Connection
from appliance.api.httpd_wsgi import Peer, Reply, build_environ, error_reply, run_app, split_target

logger = logging.getLogger(__name__)

LaneOf = Callable[[str, str], str]
OnReady = Callable[[tuple[str, int]], None]
STOP_POLL_SECONDS = 0.05


def all_health(method: str, path: str) -> str:
    """The default lane function: every request in the "health" pool."""
    return "health"


def _default_pools() -> dict[str, int]:
    return {"health": 4, "read": 4, "control": 8}


@dataclass(frozen=True)
class Limits:
    """Deadlines (seconds, each a total for its phase) and sizes that bound what one client can take."""

    header_timeout: float = 5.0
    body_timeout: float = 10.0
    idle_timeout: float = 5.0
    handshake_timeout: float = 5.0
    write_timeout: float = 10.0
    grace_timeout: float = 5.0
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 1024 * 1024
    max_response_bytes: int = 16 * 1024 * 1024
    max_connections: int = 512
    max_per_client: int = 32
    max_requests_per_connection: int = 1000
    pools: Mapping[str, int] = field(default_factory=_default_pools)
    queue_bound: int = 32

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "idle_timeout", "handshake_timeout", "write_timeout",
                     "grace_timeout", "max_header_bytes", "max_body_bytes", "max_response_bytes",
                     "max_connections", "max_per_client", "max_requests_per_connection"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be greater than 0, got {getattr(self, name)!r}")
        if self.queue_bound < 0:
            raise ValueError(f"Limits.queue_bound must not be negative, got {self.queue_bound!r}")
        if not self.pools:
            raise ValueError("Limits.pools must name at least one lane")
        for lane, threads in self.pools.items():
            if not isinstance(threads, int) or threads < 1:
                raise ValueError(f"Limits.pools[{lane!r}] must be a thread count of at least 1, got {threads!r}")


DEFAULT_LIMITS = Limits()


class _Lane:
    """One thread pool and the count of the requests it holds (running + waiting), bounded."""

    def __init__(self, name: str, threads: int, queue_bound: int) -> None:
        self.threads = threads
        self.capacity = threads + queue_bound
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"httpd-{name}")
        self._held = 0
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        with self._lock:
            return max(0, self._held - self.threads)

    def try_acquire(self) -> bool:
        with self._lock:
            if self._held >= self.capacity:
                return False
            self._held += 1
            return True

    def release(self, _done: object = None) -> None:
        with self._lock:
            self._held -= 1


class _Core:
    """The listening side: admission (connection limits), lanes, graceful stop."""

    def __init__(self, app: WSGIApplication, limits: Limits, lane: LaneOf,
                 ssl_context: ssl.SSLContext | None) -> None:
        self.app, self.limits, self.lane, self.ssl_context = app, limits, lane, ssl_context
        self.lanes = {name: _Lane(name, threads, limits.queue_bound) for name, threads in limits.pools.items()}
        self.connections: dict[asyncio.Task[None], Connection] = {}
        self.per_client: collections.Counter[str] = collections.Counter()
        self.stopping = False

    async def run(self, host: str, port: int, stop: threading.Event, on_ready: OnReady | None,
                  sock: socket.socket | None = None) -> None:
        if sock is not None:  # handed over already listening (supervisord holds it across restarts)
            server = await asyncio.start_server(self._accept, sock=sock)
        else:
            server = await asyncio.start_server(self._accept, host, port, backlog=128, reuse_address=True)
        try:
            address = server.sockets[0].getsockname()
            logger.info("httpd: listening on %s:%d%s", address[0], address[1], " (TLS)" if self.ssl_context else "")
            if on_ready is not None:
                on_ready((str(address[0]), int(address[1])))
            while not stop.is_set():
                await asyncio.sleep(STOP_POLL_SECONDS)
        finally:
            server.close()
            await self._stop_connections()
            for lane in self.lanes.values():
                lane.executor.shutdown(wait=False, cancel_futures=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername") or ("?", 0)
        client = str(peer[0])
        refusal = self._refusal(client)
        if refusal is not None:
            logger.info("httpd: %s:%s: refused: %s", client, peer[1], refusal)
            writer.transport.abort()
            return
        connection = Connection(self, reader, writer, (client, int(peer[1])))
        self.connections[task] = connection
        self.per_client[client] += 1
        try:
            await connection.run()
        except Exception:  # the connection's boundary: one bad connection never stops the server
            logger.exception("httpd: %s: unexpected error", connection.label)
        finally:
            del self.connections[task]
            self.per_client[client] -= 1
            if self.per_client[client] <= 0:
                del self.per_client[client]

    def _refusal(self, client: str) -> str | None:
        if self.stopping:
            return "server stopping"
        if len(self.connections) >= self.limits.max_connections:
            return f"{len(self.connections)} connections open (max_connections)"
        if self.per_client[client] >= self.limits.max_per_client:
            return f"{self.per_client[client]} connections open from this client (max_per_client)"
        return None

    async def dispatch(self, request: h11.Request, body: bytes, peer: Peer) -> Reply:
        """Run the app for one complete request in its lane's pool; the server's error answers otherwise."""
        method = request.method.decode("ascii")
        path, _ = split_target(request.target)
        try:
            name = self.lane(method, path)
            lane = self.lanes[name]
        except Exception:
            logger.exception("httpd: no lane for %s %s", method, path)
            return error_reply(500, "internal server error")
        if not lane.try_acquire():
            logger.info("httpd: %s:%d: %s %s: lane %r full", *peer.remote, method, path, name)
            return error_reply(503, f"server busy: {lane.waiting} requests waiting")
        environ = build_environ(request, body, peer)
        future: Future[Reply] = lane.executor.submit(run_app, self.app, environ, self.limits.max_response_bytes)
        future.add_done_callback(lane.release)
        try:
            return await asyncio.wrap_future(future)
        except Exception:
            logger.exception("httpd: %s %s: the application failed", method, path)
            return error_reply(500, "internal server error")

    async def _stop_connections(self) -> None:
        """Close idle and half-received connections now; let in-flight requests finish within grace."""
        self.stopping = True
        for task, connection in list(self.connections.items()):
            if not connection.busy:
                task.cancel()
        tasks = list(self.connections)
        if tasks:
            await asyncio.wait(tasks, timeout=self.limits.grace_timeout)
        for task in list(self.connections):
            logger.info("httpd: %s: cut at shutdown after %g s", self.connections[task].label,
                        self.limits.grace_timeout)
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)


def serve(app: WSGIApplication, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
          limits: Limits = DEFAULT_LIMITS, lane: LaneOf = all_health, stop: threading.Event | None = None,
          on_ready: OnReady | None = None, sock: socket.socket | None = None) -> None:
    """Serve ``app`` on host:port (or the listening ``sock``) until ``stop`` is set (or SIGTERM/SIGINT
    when called without one from the main thread); the asyncio loop runs in the calling thread."""
    asyncio.run(_main(_Core(app, limits, lane, ssl_context), host, port, stop, on_ready, sock))


async def _main(core: _Core, host: str, port: int, stop: threading.Event | None, on_ready: OnReady | None,
                sock: socket.socket | None = None) -> None:
    if stop is None:
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
    await core.run(host, port, stop, on_ready, sock)


class Server:
    """serve() in a background thread, for tests and embedding: ``start()``, ``.address``, ``close()``."""

    def __init__(self, app: WSGIApplication, host: str = "127.0.0.1", port: int = 0, *,
                 ssl_context: ssl.SSLContext | None = None, limits: Limits = DEFAULT_LIMITS,
                 lane: LaneOf = all_health) -> None:
        self._app, self._host, self._port = app, host, port
        self._ssl_context, self._limits, self._lane = ssl_context, limits, lane
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._address: tuple[str, int] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="httpd", daemon=True)

    def _run(self) -> None:
        try:
            serve(self._app, self._host, self._port, ssl_context=self._ssl_context, limits=self._limits,
                  lane=self._lane, stop=self._stop, on_ready=self._on_ready)
        except BaseException as exc:
            self._error = exc
            logger.exception("httpd: the server failed")
        finally:
            self._ready.set()

    def _on_ready(self, address: tuple[str, int]) -> None:
        self._address = address
        self._ready.set()

    def start(self, timeout: float = 10.0) -> Server:
        self._thread.start()
        if not self._ready.wait(timeout) or self._address is None:
            raise RuntimeError(f"the HTTP server did not start: {self._error or 'timed out'}")
        return self

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("the HTTP server is not started")
        return self._address

    def close(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
