"""The REST API (Flask on gunicorn): health checks, status and metrics from the manager's state."""
