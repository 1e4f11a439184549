"""docs/configuration.md calls ignored exactly the Patroni keys the code ignores, never an implemented one."""

from __future__ import annotations

import re
from pathlib import Path

from appliance.config.patroni_keys import ETCD_CLIENT_KEYS, LOCAL_IGNORED
from appliance.config.schema import DynamicConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
SECTIONS = {"restapi", "ctl", "etcd3", "bootstrap", "postgresql", "etcd"}


def documented_ignored() -> set[str]:
    """The key names in the doc's list of accepted-but-ignored Patroni keys."""
    text = DOC.read_text()
    block = text[text.index("**accepted but ignored**"):text.index("`etcd3.host` (one endpoint)")]
    names = set(re.findall(r"`([a-z_0-9]+)`", block))
    for stem in re.findall(r"`([a-z_]+)\(_repl\)`", block):
        names |= {stem, stem + "_repl"}
    return names - SECTIONS


def test_every_ignored_key_is_documented_and_no_documented_one_is_implemented() -> None:
    documented = documented_ignored() - ETCD_CLIENT_KEYS  # the etcd v2 section's keys, named as examples
    ignored = {k for keys in LOCAL_IGNORED.values() for k in keys} - ETCD_CLIENT_KEYS
    ignored |= LOCAL_IGNORED[("etcd3",)]
    documented |= LOCAL_IGNORED[("etcd3",)] & documented_ignored()
    wildcard = {k for k in ignored if k.startswith("remove_data_directory_on_")}
    assert sorted(ignored - wildcard - documented) == []
    assert sorted(documented - ignored) == []
    assert not documented & set(DynamicConfig.model_fields)  # member_slots_ttl, for one, is implemented
