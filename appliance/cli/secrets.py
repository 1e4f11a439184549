"""``appliance secrets``: make a cluster's identity (CA, passwords) and issue node certificates."""

from __future__ import annotations

import click

from appliance.tls import identity, pki


@click.group()
def secrets() -> None:
    """The cluster identity: one CA and the passwords, generated once (scripts/up does it for compose)."""


@secrets.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--scope", default="pgappliance", show_default=True, help="Cluster name (in the CA's name).")
@click.option("--uid", type=int, default=None, help="Owner of the files (default: the current user).")
@click.option("--gid", type=int, default=None, help="Group of the files.")
def init(directory: str, scope: str, uid: int | None, gid: int | None) -> None:
    """Create what is missing in DIRECTORY (0700): ca.crt, ca.key and one file per password (0600).
    Existing files are kept, so running it again changes nothing."""
    created = identity.init_secrets(directory, scope=scope, uid=uid, gid=gid)
    for name in created:
        click.echo(f"created {directory}/{name}")
    if not created:
        click.echo(f"{directory}: every secret is there already")


@secrets.command("issue")
@click.option("--ca", "ca_file", required=True, type=click.Path(dir_okay=False, exists=True), help="ca.crt")
@click.option("--ca-key", "ca_key", required=True, type=click.Path(dir_okay=False, exists=True), help="ca.key")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Where node.crt/key go.")
@click.option("--name", "names", multiple=True, required=True, help="A DNS name (repeat; the first is the CN).")
@click.option("--ip", "ips", multiple=True, help="An IP address (repeat).")
def issue(ca_file: str, ca_key: str, out_dir: str, names: tuple[str, ...], ips: tuple[str, ...]) -> None:
    """Issue (or renew) a node certificate from the cluster CA, e.g. for a VM's env file."""
    try:
        tls, fresh = identity.issue_node(ca_file, ca_key, out_dir, dns_names=list(names),
                                         ip_addresses=list(ips))
    except pki.PkiError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'issued' if fresh else 'still valid'}: {tls.cert_file} (key {tls.key_file}, CA {tls.ca_file})")
