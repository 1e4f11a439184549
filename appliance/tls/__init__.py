"""TLS material for secure-by-default clusters: the cluster CA and per-node certificates."""
