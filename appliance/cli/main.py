"""The ``appliance`` command: daemons (manager, api), the local demo, and (later) operator commands."""

from __future__ import annotations

import sys

import click

from appliance import __version__
from appliance.cli.ctl import CTL_COMMANDS
from appliance.cli.demo import demo
from appliance.cli.secrets import secrets

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    envvar="APPLIANCE_CONFIG",
    required=True,
    type=click.Path(dir_okay=False),
    help="The node's YAML config file (env: APPLIANCE_CONFIG).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="appliance")
def cli() -> None:
    """pgappliance: a self-contained, highly available PostgreSQL appliance."""


@click.command()
@CONFIG_OPTION
def manager(config_path: str) -> None:
    """Run the HA manager of this node (supervisord starts it; it owns PostgreSQL)."""
    # Imported here: the daemons' dependencies must not load for every CLI call.
    from appliance.manager.main import run

    sys.exit(run(config_path))


@click.command()
@CONFIG_OPTION
@click.option("--listen-fd", type=int, default=None,
              help="Serve on this already listening socket (supervisord's) instead of binding restapi.listen.")
def api(config_path: str, listen_fd: int | None) -> None:
    """Serve the REST API (bound to restapi.listen)."""
    from appliance.api.server import serve

    serve(config_path, listen_fd=listen_fd)


# Adding a command or a group is one line here.
COMMANDS: tuple[click.Command, ...] = (manager, api, demo, secrets, *CTL_COMMANDS)
for _command in COMMANDS:
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="appliance")
