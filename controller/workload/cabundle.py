"""Trusted CA ConfigMaps mounted into the pods the controller renders (pure functions over dicts).

Two sources, the more specific first:

- a ConfigMap the user names (``job.ca_configmap`` in the controller settings, or a ModelSync's
  ``spec.job.caConfigMap``): a required volume; ``MODELFERRY_TLS__CA_BUNDLE`` points at it, so it is the
  trust of every HTTPS client in the pod;
- the platform's bundle: OpenShift AI's ``odh-trusted-ca-bundle`` (keys ``ca-bundle.crt``, the
  cluster-wide trusted bundle that OpenShift injects because the ConfigMap carries the label
  ``config.openshift.io/inject-trusted-cabundle: "true"``, and ``odh-ca-bundle.crt``, the custom CAs of
  the DSCInitialization). It is mounted as an optional volume, and ``MODELFERRY_TLS__CLUSTER_BUNDLE``
  names the directory; the pod trusts it only when the namespace has the ConfigMap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

CA_ROOT = "/etc/modelferry/ca"
ODH_CONFIGMAP = "odh-trusted-ca-bundle"
ODH_KEYS = ("ca-bundle.crt", "odh-ca-bundle.crt")
INJECT_LABEL = "config.openshift.io/inject-trusted-cabundle"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


@dataclass(frozen=True)
class CASource:
    """One ConfigMap to mount: its name, the keys (files) to take, and whether it may be absent."""

    configmap: str
    keys: tuple[str, ...]
    optional: bool

    @property
    def directory(self) -> str:
        return f"{CA_ROOT}/{'platform' if self.optional else 'named'}"

    @property
    def variable(self) -> str:
        return "MODELFERRY_TLS__CLUSTER_BUNDLE" if self.optional else "MODELFERRY_TLS__CA_BUNDLE"


def invalid_ca_reference(name: str | None, keys: list[str] | tuple[str, ...] = ()) -> str | None:
    """Why a ConfigMap name or key is unusable (a tenant wrote it), or None when it is fine."""
    if name is not None and not _NAME.match(name):
        return f"{name!r} is not a ConfigMap name (lower-case letters, digits, '-' and '.')"
    bad = [k for k in keys if not _KEY.match(k) or k in (".", "..")]
    if bad:
        return f"{bad[0]!r} is not a ConfigMap key (letters, digits, '-', '_' and '.')"
    return None


def ca_source(named: str | None, keys: tuple[str, ...], *, platform: bool) -> CASource | None:
    """The ConfigMap a pod should trust: the named one, else the platform's (optional), else none."""
    if named:
        return CASource(named, keys or ("ca-bundle.crt",), optional=False)
    if platform:
        return CASource(ODH_CONFIGMAP, ODH_KEYS, optional=True)
    return None


def mount_ca(pod_spec: dict[str, Any], source: CASource | None, containers: list[dict[str, Any]]) -> None:
    """Add the CA volume to ``pod_spec`` and its read-only mount and variable to each of ``containers``."""
    if source is None:
        return
    volume = "trusted-ca"
    pod_spec.setdefault("volumes", []).append(
        {
            "name": volume,
            "configMap": {
                "name": source.configmap,
                "items": [{"key": key, "path": key} for key in source.keys],
                "optional": source.optional,
            },
        }
    )
    for container in containers:
        container.setdefault("volumeMounts", []).append(
            {"name": volume, "mountPath": source.directory, "readOnly": True}
        )
        container.setdefault("env", []).append({"name": source.variable, "value": source.directory})
