"""The one cluster-side source policy, as the controller applies it to ModelSync, TrainingRun and Secret mode."""

from __future__ import annotations

from typing import Any

import pytest

from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.sync.modelsync import plan_modelsync_job
from modelferry.controller.sync.secretmode import plan_secret_job
from modelferry.controller.training.render import RenderContext, render
from modelferry.errors import SourceNotAllowedError
from modelferry.source_policy import check_cluster_source
from modelferry.uri import parse_uri
from tests.unit.test_training_render import tr_with

TOKEN = "file:///var/run/secrets/kubernetes.io/serviceaccount"


def test_check_cluster_source_allows_remote_stores_and_admin_roots_only() -> None:
    for ok in ("hf://org/m", "s3://bkt/p", "cos://bkt/p", "oci://n/ns/b/bk/o/p"):
        check_cluster_source(parse_uri(ok))
    for refused in (TOKEN, "/etc", "relative/path", "pvc://claim/x", "file:///srv/shared/../../var/run/secrets"):
        with pytest.raises(SourceNotAllowedError):
            check_cluster_source(parse_uri(refused), allowed_local_roots=["/srv/shared"])
    check_cluster_source(parse_uri("file:///srv/shared/models/llama"), allowed_local_roots=["/srv/shared"])
    check_cluster_source(parse_uri("pvc://claim/x"), mounted_claims=["claim"])
    with pytest.raises(SourceNotAllowedError):
        check_cluster_source(parse_uri("file:///srv/shared-other/x"), allowed_local_roots=["/srv/shared"])


def modelsync(uri: str) -> dict[str, Any]:
    return {"apiVersion": "modelferry.io/v1alpha1", "kind": "ModelSync",
            "metadata": {"name": "m", "namespace": "demo", "uid": "u"},
            "spec": {"source": {"uri": uri}, "target": {"uri": "s3://dst/m"}}}  # fmt: skip


def test_modelsync_trainingrun_and_secret_mode_cannot_read_a_local_path_in_the_pod() -> None:
    plan = plan_modelsync_job(modelsync(TOKEN), {}, ControllerSettings())
    assert plan.job is None and plan.error is not None and plan.error.reason == "SourceNotAllowed"
    allowed = ControllerSettings(allowed_local_roots=["/srv/shared"])
    assert plan_modelsync_job(modelsync("file:///srv/shared/llama"), {}, allowed).job is not None

    for spec in ({"baseModel": {"uri": TOKEN}}, {"dataset": {"uri": "file:///etc/data.jsonl"}}):
        result = render(tr_with(**spec), RenderContext())
        assert result.problem is not None and result.problem.reason == "SourceNotAllowed", result.problem
    # A claim of the run's namespace is mounted into the Job, so it may be read.
    assert render(tr_with(dataset={"uri": "pvc://data/train.jsonl"}), RenderContext()).problem is None
    via_sync = tr_with(baseModel={"modelSyncRef": {"name": "local"}})
    result = render(via_sync, RenderContext(model_syncs={"local": "file:///var/run/secrets/x"}))
    assert result.problem is not None and result.problem.reason == "SourceNotAllowed"

    secret = {"metadata": {"name": "model-source", "namespace": "demo"},
              "stringData": {"S3_SYNC_SRC__PATH": TOKEN}}  # fmt: skip
    target_secret = {"metadata": {"name": "demo-models"}, "stringData": {"AWS_S3_BUCKET": "bkt", "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s", "AWS_S3_ENDPOINT": "http://e"}}  # fmt: skip
    finding = plan_secret_job(secret, target_secret, ControllerSettings()).error
    assert finding is not None and finding.reason == "SourceNotAllowed"
