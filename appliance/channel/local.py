"""The files one manager exchanges with its node's API and fencer, as replaceable functions (the
simulation keeps them in memory; everything else uses the files)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from appliance.channel.failsafe import Received, last_received
from appliance.channel.intents import Intent, take_all
from appliance.channel.state import StateDoc, write_state
from appliance.fence.order import FencerReport, LeaseOrder, read_order, read_report, write_order


@dataclass(frozen=True)
class LocalChannels:
    write_state: Callable[[str, StateDoc], None] = write_state
    write_order: Callable[[str, LeaseOrder], None] = write_order
    read_order: Callable[[str], LeaseOrder | None] = read_order
    read_report: Callable[[str], FencerReport | None] = read_report
    take_intents: Callable[[str], list[Intent]] = take_all
    read_failsafe: Callable[[str], Received | None] = last_received
