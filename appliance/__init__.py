"""pgappliance: a self-contained, highly available PostgreSQL appliance (Patroni-compatible)."""

__version__ = "0.1.0"
