"""Command-line entry points: the daemons, the local demo runner and the operator CLI."""
