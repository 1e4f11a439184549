"""Network clients shared by the manager, the API, the CLI and the runtime."""
