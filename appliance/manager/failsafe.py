"""Failsafe mode: a primary cut off from the DCS asks every member in ``/failsafe`` over REST
(POST /failsafe) whether it may go on; a member that accepts records it so that its own manager
does not race for the leader key while that primary runs (the record itself: channel/failsafe)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from appliance.core.model import ClusterView
from appliance.manager.events import EventLog
from appliance.net.http import Client, request


def confirm_all(members: dict[str, str], me: dict[str, Any], client: Client | None,
                timeout: float = 2.0) -> tuple[bool, dict[str, str]]:
    """POST /failsafe to every other member; (all answered 200, why each other one did not)."""
    others = {name: url for name, url in members.items() if name != me.get("name")}
    if not others:
        return True, {}

    def ask(item: tuple[str, str]) -> tuple[str, str | None]:
        name, api_url = item
        base = api_url.rsplit("/", 1)[0] if api_url.endswith("/patroni") else api_url.rstrip("/")
        try:
            answer = request(f"{base}/failsafe", client, method="POST", body=me, timeout=timeout)
        except Exception as exc:  # unreachable, refused, bad certificate
            return name, f"unreachable: {exc}"
        return name, None if answer.status == 200 else f"answered {answer.status}"

    with ThreadPoolExecutor(max_workers=min(8, len(others))) as pool:
        refusals = {name: why for name, why in pool.map(ask, others.items()) if why is not None}
    return not refusals, refusals


class FailsafeKeeper:
    """The primary's side of a failsafe episode, one round per tick while the DCS is unreachable."""

    def __init__(self, events: EventLog, clock: Callable[[], float]) -> None:
        self.events = events
        self.clock = clock
        self.known: ClusterView | None = None  # the last view the DCS gave
        self.active = False
        self.refusals: dict[str, str] = {}

    def round(self, view: ClusterView | None, *, enabled: bool, name: str, primary: bool, me: dict[str, Any],
              client: Callable[[], Client | None], confirmed: Callable[[float], None]) -> bool | None:
        """DCS unreachable while we run as the primary that held the key: ask every member in
        /failsafe; when all accept, ``confirmed(sent)``: none of them races for the key for ttl
        after our request. None when no round applies (DCS reachable, failsafe off, not primary)."""
        if view is not None:
            self.known = view
            if self.active:
                self.events.emit("failsafe", "DCS reachable again: failsafe episode over")
            self.active = False
            return None
        known = self.known
        if not enabled or known is None or not known.failsafe or known.leader_name != name or not primary:
            self.active = False
            return None
        started = self.clock()
        ok, refusals = confirm_all(known.failsafe, me, client())
        if ok:
            confirmed(started)
        if ok != self.active or refusals != self.refusals:
            if ok:
                self.events.emit("failsafe", "DCS unreachable: every member in /failsafe confirmed us, "
                                 "keep running as primary", level=logging.WARNING)
            else:
                self.events.emit("failsafe", f"DCS unreachable and not every member confirmed us: {refusals}",
                                 level=logging.WARNING, refusals=refusals)
        self.active, self.refusals = ok, refusals
        return ok
