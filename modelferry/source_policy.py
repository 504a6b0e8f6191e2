"""Which sources a tenant may name where modelferry reads them with its own rights (pure).

The node agent reads a BaseModel's ``storageUri`` inside its own pod, and the
controller's Jobs read a ModelSync's, a TrainingRun's or a ``model-source``
Secret's source inside theirs. A ``file://`` source there is a path in *our*
container (``file:///var/run/secrets/kubernetes.io/serviceaccount`` is the
component's own API token), and ``pvc://claim`` is a path under the pod's PVC
mount root whether or not the claim is mounted. So on that side a source is a
remote store (``hf``, ``s3``, ``cos``, ``oci``), a ``pvc://`` claim the caller
says it mounts, or a ``file://`` path under a root the platform admin allowed in
the component's settings (``allowed_local_roots``, empty by default). The
command line (``modelferry sync``) is not subject to this: there the user reads
with their own rights.

:func:`check_cluster_source` is the one decision; the agent and the controller
both call it.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence

from modelferry.backends import backend_for, find
from modelferry.backends.registry import schemes as registered_schemes
from modelferry.errors import SourceNotAllowedError
from modelferry.uri import StorageURI

# The remote schemes registered at import; the check asks the registry (modelferry.backends) itself.
REMOTE_SCHEMES = tuple(s for s in registered_schemes() if backend_for(s).remote)


def under_root(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it, compared after normalising both (``..`` cannot climb out)."""
    path, root = os.path.normpath(path), os.path.normpath(root)
    if not os.path.isabs(path) or not os.path.isabs(root):
        return False
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_cluster_source(
    uri: StorageURI,
    *,
    allowed_local_roots: Sequence[str] = (),
    mounted_claims: Collection[str] = (),
    where: str = "source",
) -> None:
    """Raise :class:`SourceNotAllowedError` unless the cluster side may read ``uri``.

    The check is on the path as written (``..`` normalised away); a caller that can
    look at the filesystem (the agent) checks the path with its links resolved too.
    """
    backend = find(uri.scheme)
    if backend is not None and backend.remote:
        return
    if uri.scheme == "pvc":
        if uri.bucket in mounted_claims:
            return
        raise SourceNotAllowedError(
            f"{where} {uri} names a PersistentVolumeClaim this component does not mount",
            obj=str(uri),
            hint="Use an hf://, s3://, cos:// or oci:// source, or copy the claim's files to a bucket first",
        )
    if any(under_root(uri.path, root) for root in allowed_local_roots):
        return
    allowed = ", ".join(allowed_local_roots) if allowed_local_roots else "none are allowed"
    raise SourceNotAllowedError(
        f"{where} {uri} is a local path inside the modelferry pod, which tenants may not read "
        f"(allowed local roots: {allowed})",
        obj=str(uri),
        hint="Use an hf://, s3://, cos:// or oci:// source; a platform admin can allow a local root with the "
        "component's allowed_local_roots setting",
    )
