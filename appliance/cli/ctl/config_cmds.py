"""edit-config: change the dynamic config (editor, -s, -p, --apply, --replace), show the diff, validate, write."""

from __future__ import annotations

import sys
from typing import Any

import click

from appliance.cli.ctl.cluster import read_view, scoped, write_config
from appliance.cli.ctl.editing import (
    EditError,
    apply_changes,
    load_document,
    parse_pg,
    parse_set,
    unified_diff,
)
from appliance.cli.ctl.formatting import dump_config
from appliance.cli.ctl.rest import api_base, call
from appliance.cli.ctl.target import CtlError, Target, connection_options, pop_target
from appliance.config import ConfigError, validate_dynamic
from appliance.config.tree import merge_patch
from appliance.core.model import ClusterView


def _read_source(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path) as handle:
            return handle.read()
    except OSError as exc:
        raise CtlError(f"cannot read {path}: {exc.strerror}") from None


def new_config(before: dict[str, Any], sets: tuple[str, ...], pgs: tuple[str, ...], apply: str | None,
               replace: str | None) -> dict[str, Any] | None:
    """The edited config from the flags; None when no flag was given (the editor decides)."""
    if apply and replace:
        raise CtlError("--apply and --replace exclude each other: pass one of them")
    if not (sets or pgs or apply or replace):
        return None
    try:
        after = dict(before)
        if replace:
            after = load_document(_read_source(replace), f"--replace {replace}")
        if apply:
            after = merge_patch(after, load_document(_read_source(apply), f"--apply {apply}"))
        changes = [parse_set(s) for s in sets] + [parse_pg(p) for p in pgs]
        return apply_changes(after, changes)
    except EditError as exc:
        raise CtlError(str(exc)) from None


def edit_in_editor(before: dict[str, Any]) -> dict[str, Any]:
    """$EDITOR (click picks VISUAL/EDITOR, then vi) on the YAML; unchanged buffer: the same config."""
    text = click.edit(dump_config(before), extension=".yaml", require_save=True)
    if text is None:
        return before
    try:
        return load_document(text, "the edited configuration")
    except EditError as exc:
        raise CtlError(str(exc)) from None


def validate(after: dict[str, Any]) -> None:
    """Strict validation of the whole dynamic config; the first problem names the field."""
    try:
        validate_dynamic(after, source="edit-config")
    except ConfigError as exc:
        raise CtlError(str(exc).replace("\n", " ")) from None


def store(target: Target, view: ClusterView, after: dict[str, Any]) -> None:
    """CAS write of the config key when the DCS is reachable; PUT /config on --url otherwise."""
    if target.has_dcs:
        write_config(target, after, view.config_revision)
        return
    assert target.url is not None
    reply = call(target, "PUT", f"{api_base(target.url)}/config", after)
    if not reply.ok:
        raise CtlError(f"PUT /config answered {reply.status}: {reply.message}")


@click.command("edit-config")
@click.argument("cluster_name", required=False)
@click.option("--set", "-s", "sets", multiple=True, metavar="KEY.PATH=VALUE",
              help="Set a dynamic setting (null deletes it), e.g. -s loop_wait=2.")
@click.option("--pg", "-p", "pgs", multiple=True, metavar="PARAM=VALUE",
              help="Set a PostgreSQL parameter (null deletes it), e.g. -p work_mem=16MB.")
@click.option("--apply", "apply", metavar="FILE|-", help="Merge a YAML file (null deletes) into the config.")
@click.option("--replace", "replace", metavar="FILE|-", help="Replace the config with a YAML file.")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the diff.")
@click.option("--force", is_flag=True, help="Apply without asking.")
@connection_options
def edit_config_cmd(cluster_name: str | None, sets: tuple[str, ...], pgs: tuple[str, ...], apply: str | None,
                    replace: str | None, quiet: bool, force: bool, **conn: Any) -> None:
    """Change the cluster-wide (dynamic) configuration, after a diff and a confirmation."""
    target, _ = scoped(pop_target(conn), (cluster_name,) if cluster_name else ())
    view = read_view(target)
    if view.config is None:
        raise CtlError("the DCS has no config key yet (cluster not bootstrapped?): nothing to edit")
    before = dict(view.config)
    after = new_config(before, sets, pgs, apply, replace)
    if after is None:
        after = edit_in_editor(before)
    if after == before:
        click.echo("Not changed")
        return
    validate(after)
    if not quiet:
        click.echo(unified_diff(before, after), nl=False)
    if not force and not click.confirm("Apply these changes?"):
        raise CtlError("Not applied: nothing changed")
    store(target, view, after)
    click.echo("Configuration changed")


COMMANDS: tuple[click.Command, ...] = (edit_config_cmd,)
