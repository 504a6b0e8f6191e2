"""modelferry.io/v1alpha1: every kind of this version, in the order the CRDs are listed."""

from __future__ import annotations

from modelferry.controller.api.meta import Kind
from modelferry.controller.api.v1alpha1 import basemodel, modelserver, modelsync, nodeagent, trainingrun

VERSION = "v1alpha1"
KINDS: tuple[Kind, ...] = (
    modelsync.KIND,
    basemodel.BASE_MODEL,
    basemodel.CLUSTER_BASE_MODEL,
    trainingrun.KIND,
    modelserver.KIND,
    nodeagent.KIND,
)
