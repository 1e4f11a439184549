"""DCS adapters: etcd v3 with Patroni's key layout, and an in-memory fake for unit tests."""
