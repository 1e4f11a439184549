"""Turn the effective configuration into what the manager's parts need: HaSettings and PgConfig."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from appliance.config import Effective, LocalLayers, build_local, load_local
from appliance.config.errors import ConfigError
from appliance.config.schema import DynamicConfig, LocalConfig
from appliance.config.security import security_problems, security_warnings
from appliance.core.state import HaSettings
from appliance.core.tags import Tags
from appliance.postgres.config import PgConfig
from appliance.postgres.settings import pg_config_from_settings


def load_node_config(config_path: str | None, env: Mapping[str, str] | None = None) -> tuple[LocalLayers, LocalConfig]:
    """Read the local layers (file + env) and validate them; raises ConfigError naming the key."""
    layers = load_local(config_path, os.environ if env is None else env)
    return layers, build_local(layers)


def check_security(layers: LocalLayers, local: LocalConfig) -> list[str]:
    """Refuse to start with a channel left unprotected by accident (ConfigError naming the key);
    returns the warnings for protections turned off on purpose (logged at every start)."""
    problems = security_problems(local, layers.provenance)
    if problems:
        raise ConfigError(problems)
    return security_warnings(local)


def ha_settings(dynamic: DynamicConfig, local: LocalConfig) -> HaSettings:
    return HaSettings(
        ttl=dynamic.ttl,
        loop_wait=dynamic.loop_wait,
        retry_timeout=dynamic.retry_timeout,
        maximum_lag_on_failover=dynamic.maximum_lag_on_failover,
        maximum_lag_on_syncnode=dynamic.maximum_lag_on_syncnode,
        primary_start_timeout=dynamic.primary_start_timeout,
        primary_stop_timeout=dynamic.primary_stop_timeout,
        max_timelines_history=dynamic.max_timelines_history,
        member_slots_ttl=dynamic.member_slots_ttl,
        failsafe_mode=dynamic.failsafe_mode,
        synchronous_mode=dynamic.synchronous_mode is not False,
        synchronous_quorum=dynamic.synchronous_mode == "quorum",
        synchronous_mode_strict=dynamic.synchronous_mode_strict,
        synchronous_node_count=dynamic.synchronous_node_count,
        pause=dynamic.pause,
        use_pg_rewind=dynamic.postgresql.use_pg_rewind,
        use_slots=dynamic.postgresql.use_slots,
        check_timeline=dynamic.check_timeline,
        tags=Tags.from_json(local.tags),
    )


def pg_config(effective: Effective) -> PgConfig:
    local = effective.local
    cfg = pg_config_from_settings(local, effective.postgresql_parameters,
                                  socket_dir=os.path.join(local.appliance.run_dir, "pgsocket"),
                                  passfile=os.path.join(local.appliance.run_dir, "pgpass"))
    return dataclasses.replace(cfg, pg_hba=hba_lines(effective))


def hba_lines(effective: Effective) -> tuple[str, ...] | None:
    """The operator's pg_hba lines in effect: local, else dynamic (Patroni's rule), else bootstrap's."""
    hba = effective.pg_hba if effective.pg_hba is not None else effective.local.bootstrap.pg_hba
    return tuple(hba) if hba is not None else None


def api_url(local: LocalConfig) -> str:
    scheme = "https" if local.restapi.certfile else "http"
    return f"{scheme}://{local.restapi.connect_address}/patroni"
