"""ModelSync ``spec.decrypt``: the sync decrypts with KMS settings taken from a Secret by reference."""

from __future__ import annotations

from typing import Any

from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.sync.modelsync import plan_modelsync_job, referenced_secrets

SETTINGS = ControllerSettings()


def modelsync(decrypt: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "modelferry.io/v1alpha1",
        "kind": "ModelSync",
        "metadata": {"name": "m", "namespace": "demo", "uid": "u", "generation": 1},
        "spec": {"source": {"uri": "s3://enc/model"}, "target": {"uri": "pvc://models/llama"}, "decrypt": decrypt},
    }


def secret(**data: str) -> dict[str, Any]:
    return {"metadata": {"name": "kms"}, "stringData": data}


def container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_decrypt_adds_flag_and_secret_references_only() -> None:
    obj = modelsync({"credentialsSecret": "kms"})
    assert "kms" in referenced_secrets(obj)
    data = {"MODELFERRY_ENIGMA__VAULT__ADDRESS": "http://bao:8200", "VAULT_TOKEN": "s.very-secret", "IGNORED": "x"}
    plan = plan_modelsync_job(obj, {"kms": secret(**data)}, SETTINGS)
    assert plan.error is None and plan.job is not None
    c = container(plan.job)
    assert "--decrypt" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["VAULT_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "kms", "key": "VAULT_TOKEN"}
    assert env["MODELFERRY_ENIGMA__VAULT__ADDRESS"]["valueFrom"]["secretKeyRef"]["name"] == "kms"
    assert "IGNORED" not in env
    assert "s.very-secret" not in str(plan.job)


def test_decrypt_missing_or_useless_secret_is_a_clear_error() -> None:
    missing = plan_modelsync_job(modelsync({"credentialsSecret": "kms"}), {"kms": None}, SETTINGS)
    assert missing.job is None and missing.error is not None
    assert missing.error.reason == "CredentialsSecretNotFound" and "kms" in missing.error.message
    useless = plan_modelsync_job(modelsync({"credentialsSecret": "kms"}), {"kms": secret(OTHER="x")}, SETTINGS)
    assert useless.job is None and useless.error is not None and useless.error.reason == "CredentialsSecretInvalid"
    unset = plan_modelsync_job(modelsync({}), {}, SETTINGS)
    assert unset.error is not None and unset.error.reason == "InvalidDecrypt"
