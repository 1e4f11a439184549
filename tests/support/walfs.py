"""Small real filesystems for pg_wal: each chosen demo node's pg_wal moved onto a tmpfs of its own
(with the cluster paused), filled to the brim on demand, and unmounted at the end."""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from appliance.demo.cluster import DemoCluster
from tests.integration.ha_helpers import api_get, patch_config, wait_until

WAL_FS_MB = 320  # room for wal_keep_size (128MB) and max_wal_size's recycled segments
PG_BIN = "/usr/lib/postgresql/15/bin"


def _as_postgres(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120)


def move_wal_to_tmpfs(cluster: DemoCluster, mounts: dict[str, Path], size_mb: int = WAL_FS_MB) -> None:
    """With the cluster paused, stop each named node's PostgreSQL, put its pg_wal on a new tmpfs of
    ``size_mb`` mounted at ``mounts[node]``, and let the managers start them again (resume). A
    filesystem smaller than max_wal_size + wal_keep_size fills up by itself under a long load."""
    patch_config(cluster, {"pause": True})
    wait_until("every node paused", lambda: all(api_get(cluster, n, "/patroni").get("pause") for n in cluster.nodes),
               30)
    owner = pwd.getpwnam("postgres")
    for node, mount in mounts.items():
        data = cluster.layout.data_dir(node)
        _as_postgres(f"{PG_BIN}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(mount)],
                       check=True)
        shutil.chown(mount, "postgres", "postgres")
        subprocess.run(["cp", "-a", f"{data / 'pg_wal'}/.", str(mount)], check=True)
        shutil.rmtree(data / "pg_wal")
        os.symlink(mount, data / "pg_wal")
        os.lchown(data / "pg_wal", owner.pw_uid, owner.pw_gid)
    patch_config(cluster, {"pause": False})


def wal_on(cluster: DemoCluster, node: str, mount: Path) -> bool:
    """The node's pg_wal is still the tmpfs (a re-clone makes a new data directory without it)."""
    link = cluster.layout.data_dir(node) / "pg_wal"
    return link.is_symlink() and Path(os.readlink(link)) == mount


def fill(mount: Path, leave_mb: int) -> Path:
    """A filler file that leaves ``leave_mb`` MB free on the tmpfs."""
    free = shutil.disk_usage(mount).free
    filler = mount / "filler"
    size = max(0, free - leave_mb * 1024 * 1024)
    chunk = b"\0" * (1 << 20)
    try:
        with open(filler, "wb") as fh:
            for _ in range(size >> 20):
                fh.write(chunk)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        # PostgreSQL wrote WAL since the free space was measured: the tmpfs is full sooner, which
        # is the point (a chaos run under pgbench died of this).
    return filler


@contextlib.contextmanager
def wal_mounts(nodes: list[str]) -> Iterator[dict[str, Path]]:
    """A mount point per node; at the end each is unmounted (lazily: a PostgreSQL may still hold it)."""
    mounts = {node: Path(tempfile.mkdtemp(prefix=f"pgwal-{node}-", dir="/var/tmp")) for node in nodes}
    try:
        yield mounts
    finally:
        for mount in mounts.values():
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
            shutil.rmtree(mount, ignore_errors=True)
