"""Serve the API with gunicorn in-process: one worker with threads (the state lives in a file)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from appliance.api.app import create_app


class _Gunicorn(BaseApplication):
    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self._app = app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self._app


def serve(config_path: str) -> None:
    """Load the node's configuration and serve the API on restapi.listen until stopped."""
    from appliance.manager.settings import load_node_config

    _, local = load_node_config(config_path)
    app = create_app(local.appliance.run_dir)
    options = {
        "bind": local.restapi.listen,
        "workers": 1,
        "threads": 8,
        "worker_class": "gthread",
        "timeout": 30,
        "graceful_timeout": 5,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }
    _Gunicorn(app, options).run()
