"""Benchmarks of the local demo cluster (failover, bootstrap, soak): medians over runs, not tests."""
