"""The REST API (Flask on its own slow-client-proof server): health checks, status, control, metrics."""
