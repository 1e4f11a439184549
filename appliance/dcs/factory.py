"""The one place that turns the etcd3 settings (hosts, TLS, credentials) into an EtcdDCS client."""

from __future__ import annotations

from collections.abc import Sequence

from appliance.config.schema import Etcd3, LocalConfig
from appliance.dcs.etcd import EtcdDCS
from appliance.dcs.etcd_transport import EtcdTls


def etcd_tls(etcd3: Etcd3) -> EtcdTls | None:
    """The client's TLS material when etcd3.protocol is https (ValueError names an unreadable file)."""
    if etcd3.protocol != "https":
        return None
    return EtcdTls.from_files(etcd3.cacert, etcd3.cert, etcd3.key)


def open_etcd(hosts: Sequence[str], *, scope: str, namespace: str, name: str, ttl: int, retry_timeout: float,
              username: str | None = None, password: str | None = None, tls: EtcdTls | None = None) -> EtcdDCS:
    """The EtcdDCS of cluster ``scope`` as member ``name`` (a lease only if it ever takes one);
    ValueError names a bad host or half-given credentials."""
    return EtcdDCS(hosts=list(hosts), scope=scope, namespace=namespace, name=name, ttl=ttl,
                   retry_timeout=retry_timeout, username=username, password=password, tls=tls)


def etcd_from_config(local: LocalConfig, *, name: str, ttl: int, retry_timeout: float,
                     hosts: list[str] | None = None) -> EtcdDCS:
    """An EtcdDCS for ``local``'s cluster (scope, namespace); ``hosts`` overrides etcd3.hosts."""
    etcd3 = local.etcd3
    return open_etcd(hosts or etcd3.hosts, scope=local.scope, namespace=local.namespace, name=name, ttl=ttl,
                     retry_timeout=retry_timeout, username=etcd3.username, password=etcd3.password,
                     tls=etcd_tls(etcd3))
