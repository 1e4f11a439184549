"""pgappliance: a self-contained, highly available PostgreSQL appliance (Patroni-compatible)."""

__version__ = "0.1.0"

# The Patroni release whose outside contract (REST, DCS layout, metrics) the appliance implements.
# It is what `/patroni`, member keys and `patroni_version` report, so that Patroni's tools
# (patronictl, check_patroni) read our answers at their meaning; our own version is reported beside it.
PATRONI_VERSION = "4.1.4"
