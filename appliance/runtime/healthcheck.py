"""The container's HEALTHCHECK: this node's /liveness over the scheme and CA it really serves.

``python -m appliance.runtime.healthcheck`` exits 0 when the REST API answers /liveness with 200
(the manager's loop runs), 1 otherwise. It reads the rendered configuration only (root may, and it
must stay light: Docker runs it every 10 s).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from appliance.net.http import Client, request

DEFAULT_CONFIG = "/run/pgappliance/appliance.yml"


def local_api(config_path: str | None = None) -> tuple[str, Client]:
    """This node's REST API as seen from inside it (loopback), and a client trusting its CA."""
    path = config_path or os.environ.get("APPLIANCE_CONFIG") or DEFAULT_CONFIG
    try:
        doc: Any = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        doc = {}
    restapi = doc.get("restapi") or {} if isinstance(doc, dict) else {}
    tls = doc.get("tls") or {} if isinstance(doc, dict) else {}
    port = str(restapi.get("listen") or "0.0.0.0:8008").rpartition(":")[2]
    https = bool(restapi.get("certfile") or tls.get("cert_file"))
    client = Client(cafile=(doc.get("ctl") or {}).get("cacert") or tls.get("ca_file")) if https else Client()
    return f"{'https' if https else 'http'}://127.0.0.1:{port}", client


def main() -> int:
    base, client = local_api()
    try:
        status = request(f"{base}/liveness", client, timeout=4).status
    except OSError as exc:
        print(f"{base}/liveness: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
