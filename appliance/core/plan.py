"""One tick's plan, pure: the operator requests of the tick when one is to run (core.intents), else
the HA policy (core.decide); with the transition the chosen actions take (core.states)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from appliance.core import actions as a
from appliance.core.decide import decide
from appliance.core.intents import IntentRequest, IntentRound, ScheduledRestart, plan_round
from appliance.core.model import ClusterView
from appliance.core.state import HaSettings, LocalState
from appliance.core.states import Step, classify, transition


@dataclass(frozen=True)
class TickPlan:
    """When a request of the tick is to run, the tick serves the requests (``requests.first``, then
    each decision's actions) and ``actions`` is empty; else ``actions`` are decide()'s, and the
    requests only get their outcomes (refused, scheduled, done): a refusal never costs the HA loop
    a tick. ``step`` is the transition of whichever it is; ``requests.schedule`` the scheduled
    restart from now on."""

    requests: IntentRound
    actions: tuple[a.Action, ...]
    step: Step


def plan_tick(view: ClusterView | None, local: LocalState, cfg: HaSettings, requests: Sequence[IntentRequest],
              schedule: ScheduledRestart | None) -> TickPlan:
    source = classify(view, local)
    served = plan_round(requests, schedule, view, local, paused=cfg.pause)
    if served.runs:
        chosen = [*served.first, *(act for d in served.decisions for act in d.actions)]
        return TickPlan(served, (), transition(source, chosen))
    acts = decide(view, local, cfg)
    return TickPlan(served, tuple(acts), transition(source, acts))
