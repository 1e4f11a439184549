"""The operator CLI (patronictl-like): list, switchover, edit-config, ... registered in appliance.cli.main."""

from __future__ import annotations

import click

from appliance.cli.ctl import config_cmds, member_cmds, switch_cmds, view_cmds

CTL_COMMANDS: tuple[click.Command, ...] = (
    *view_cmds.COMMANDS,
    *config_cmds.COMMANDS,
    *switch_cmds.COMMANDS,
    *member_cmds.COMMANDS,
)

__all__ = ["CTL_COMMANDS"]
