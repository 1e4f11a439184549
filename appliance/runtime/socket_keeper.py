"""Runs inside supervisord (loaded as an rpcinterface factory): holds a reference to every
fcgi-program socket for supervisord's whole life. supervisord alone closes such a socket when its
last process is reaped and binds a new one at the next start; held here, a crashed API's successor
inherits the very socket, and connections made meanwhile wait in its backlog instead of being refused."""

from __future__ import annotations

from typing import Any


class SocketKeeper:
    """The RPC namespace (``appliance_sockets.held()``): how many sockets are held."""

    def __init__(self, held: list[Any]) -> None:
        self._held = held

    def held(self) -> int:
        return len(self._held)


def make_keeper(supervisord: Any, **_config: Any) -> SocketKeeper:
    from supervisor.process import FastCGIProcessGroup

    groups = supervisord.process_groups.values()
    return SocketKeeper([g.socket_manager.get_socket() for g in groups if isinstance(g, FastCGIProcessGroup)])
