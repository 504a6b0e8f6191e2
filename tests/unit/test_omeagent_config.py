"""The OME-Agent config model: YAML, OME_AGENT_* overrides, typo spellings, unknown keys, translation."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from modelferry.errors import UsageError
from modelferry.omeagent import KEYS, keys_for, load_ome_config
from modelferry.omeagent.keys import ENV_TO_KEY, YAML_TO_KEY
from modelferry.omeagent.translate import hf_download_job, replica_job

SAMPLE = """\
model_store_directory: "/models/store"
local_path: "/models/llama"
model_name: "meta-llama/Meta-Llama-3-8B"
hf_token: "hf_abcdefghijklmnopqrstuvwxyz"
num_connections: 20
skip_sha: false
max_retries: 5
retry_internal_in_seconds: 10

auth_type: &default_auth_type "UserPrincipal"
profile: "DEFAULT"

download_size_limit_gb: 650
enable_size_limit_check: true

source:
  bucket_name: "model-store"
  prefix: "meta/llama-3-2-1b/"
  region: "us-chicago-1"
  namespace: "idqj093njucb"

target:
  bucket_name: "test-bucket"
  prefix: "meta/llama-3-2-1b/"
  region: "eu-frankfurt-1"
  namespace: "idqj093njucb"

compartment_id: "ocid1.compartment.oc1..aaaa"
vault_id: "ocid1.vault.oc1.us-chicago-1.aaaa"
key_name: "command_r"
secret_name: "command_r-dek"
"""


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(SAMPLE)
    return path


def test_sample_from_the_ome_readme(sample: Path) -> None:
    config, report = load_ome_config(sample, "hf-download", environ={})
    assert config.model_name == "meta-llama/Meta-Llama-3-8B"
    assert config.num_connections == 20
    assert config.retry_interval_in_seconds == 10
    assert config.source.bucket_name == "model-store" and config.target.region == "eu-frankfurt-1"
    assert config.hf_token is not None and config.hf_token.get_secret_value().startswith("hf_")
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in repr(config)
    # replica/enigma keys are quietly ignored by hf-download; nothing is unknown or unsupported.
    assert "source.bucket_name" in report.ignored and "vault_id" in report.ignored
    assert not report.unknown and not report.unsupported


def test_environment_overrides_the_file(sample: Path) -> None:
    env = {
        "OME_AGENT_NUM_CONNECTIONS": "7",
        "OME_AGENT_SOURCE_BUCKET_NAME": "from-env",
        "OME_AGENT_SKIP_SHA": "true",
        "OME_AGENT_ENABLE_SIZE_LIMIT_CHECK": "false",
    }
    config, report = load_ome_config(sample, "replica", environ=env)
    assert config.num_connections == 7
    assert config.source.bucket_name == "from-env" and config.source.region == "us-chicago-1"
    assert config.skip_sha is True and config.enable_size_limit_check is False
    assert report.set_keys["source.bucket_name"] == "env OME_AGENT_SOURCE_BUCKET_NAME"


def test_env_only_without_a_file() -> None:
    config, _ = load_ome_config(None, "hf-download", environ={"OME_AGENT_MODEL_NAME": "org/m"})
    assert config.model_name == "org/m" and config.model_dir == "/opt/ml/model"


@pytest.mark.parametrize(
    ("text", "env", "field", "value"),
    [
        ("max_retry: 2\n", {}, "max_retries", 2),
        ("max_retries: 3\n", {}, "max_retries", 3),
        ("", {"OME_AGENT_MAX_RETRY": "4"}, "max_retries", 4),
        ("", {"OME_AGENT_MAX_RETRIES": "6"}, "max_retries", 6),
        ("retry_internal_in_seconds: 3\n", {}, "retry_interval_in_seconds", 3),
        ("retry_interval_in_seconds: 4\n", {}, "retry_interval_in_seconds", 4),
        ("", {"OME_AGENT_RETRY_INTERVAL_IN_SECONDS": "5"}, "retry_interval_in_seconds", 5),
        ("", {"OME_AGENT_RETRY_INTERNAL_IN_SECONDS": "6"}, "retry_interval_in_seconds", 6),
    ],
)
def test_both_spellings_of_the_typos(tmp_path: Path, text: str, env: dict[str, str], field: str, value: int) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    config, report = load_ome_config(path, "hf-download", environ=env)
    assert getattr(config, field) == value
    assert not report.unknown


def test_peft_metrics_interval_spellings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("peft_ft:\n  log_model_metrics_internal_in_steps: 11\n  lora_r: 8\n")
    config, _ = load_ome_config(path, "training-agent", environ={})
    assert config.peft_ft.log_model_metrics_interval_in_steps == 11 and config.peft_ft.lora_r == 8
    env = {"OME_AGENT_PEFT_FT_LOG_MODEL_METRICS_INTERNAL_IN_STEPS": "12"}
    config, _ = load_ome_config(None, "training-agent", environ=env)
    assert config.peft_ft.log_model_metrics_interval_in_steps == 12
    env = {"OME_AGENT_PEFT_FT_LOG_MODEL_METRICS_INTERVAL_IN_STEPS": "13", "OME_AGENT_COHERE_FT_LORA_CONFIG_RANK": "4"}
    config, _ = load_ome_config(None, "training-agent", environ=env)
    assert config.peft_ft.log_model_metrics_interval_in_steps == 13 and config.cohere_ft.lora_config.rank == 4


def test_unknown_and_unsupported_keys_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model_name: org/m\ntensorrtllm_version: v0.12.0\nnode_shape_alias: H100\nbogus_key: 1\n")
    _, report = load_ome_config(path, "hf-download", environ={"OME_AGENT_NUM_CONECTIONS": "3"})
    assert report.unsupported == ["tensorrtllm_version", "node_shape_alias"]
    assert report.unknown == ["bogus_key", "OME_AGENT_NUM_CONECTIONS"]
    with caplog.at_level(logging.WARNING):
        report.warn()
    assert "tensorrtllm_version is not supported" in caplog.text
    assert "unknown OME-Agent key OME_AGENT_NUM_CONECTIONS" in caplog.text
    report.raise_for_unusable()  # top-level unknowns only warn


def test_unknown_key_in_a_used_section_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("source:\n  bucket_name: b\n  storage_tier: archive\n")
    _, report = load_ome_config(path, "replica", environ={})
    with pytest.raises(UsageError, match=r"source\.storage_tier"):
        report.raise_for_unusable()
    _, report = load_ome_config(path, "hf-download", environ={})
    report.raise_for_unusable()  # hf-download does not read source.*
    _, report = load_ome_config(None, "replica", environ={"OME_AGENT_TARGET_ENDPOINT": "x"})
    with pytest.raises(UsageError, match="OME_AGENT_TARGET_ENDPOINT"):
        report.raise_for_unusable()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("num_connections: many\n", r"num_connections \(OME_AGENT_NUM_CONNECTIONS\)"),
        ("- a\n- b\n", "must hold a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_files_are_usage_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=match):
        load_ome_config(path, "hf-download", environ={})


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope\.yaml"):
        load_ome_config(tmp_path / "nope.yaml", "hf-download", environ={})


def test_table_is_complete_and_consistent() -> None:
    names = {k.key for k in KEYS}
    for key in ("auth_type", "source.namespace", "cohere_ft.lora_config.alpha", "peft_ft.lora_dropout", "vault_id"):
        assert key in names
    assert ENV_TO_KEY["OME_AGENT_TRAINING_METRICS_BUCKET_NAME"] == "training_metrics.bucket_name"
    assert YAML_TO_KEY["max_retry"] == "max_retries"
    assert {k.key for k in keys_for("enigma")} >= {"vault_id", "key_name", "secret_name", "compartment_id"}
    assert all(k.key.startswith(("peft_ft", "cohere_ft")) for k in keys_for("training-agent") if "ft." in k.key)


def test_hf_download_translation(sample: Path) -> None:
    config, _ = load_ome_config(sample, "hf-download", environ={"OME_AGENT_REVISION": "v1"})
    job = hf_download_job(config)
    assert job.source == "hf://meta-llama/Meta-Llama-3-8B" and job.revision == "v1"
    assert job.target == "/models/llama"  # local_path wins over model_store_directory
    assert job.overrides["transfer.concurrency"] == 20
    assert job.overrides["transfer.retries"] == 5
    assert job.overrides["transfer.backoff_base"] == 10 and job.overrides["transfer.backoff_max"] >= 10
    assert job.overrides["transfer.size_limit"] == 650 * 1000**3
    assert "transfer.trust_size" not in job.overrides and not job.warnings

    config, _ = load_ome_config(
        sample, "hf-download", environ={"OME_AGENT_SKIP_SHA": "true", "OME_AGENT_ENABLE_SIZE_LIMIT_CHECK": "false"}
    )
    job = hf_download_job(config)
    assert job.overrides["transfer.trust_size"] is True and "NOT hashed" in job.warnings[0]
    assert job.overrides["transfer.size_limit"] == 0

    with pytest.raises(UsageError, match="model_name"):
        hf_download_job(load_ome_config(None, "hf-download", environ={})[0])


def test_replica_translation(sample: Path) -> None:
    config, _ = load_ome_config(sample, "replica", environ={"OME_AGENT_AUTH_TYPE": "InstancePrincipal"})
    job = replica_job(config)
    assert job.source == "oci://n/idqj093njucb/b/model-store/o/meta/llama-3-2-1b"
    assert job.target == "oci://n/idqj093njucb/b/test-bucket/o/meta/llama-3-2-1b"
    assert job.overrides["source.oci.auth_type"] == "instance_principal"
    assert job.overrides["source.oci.region"] == "us-chicago-1"
    assert job.overrides["target.oci.region"] == "eu-frankfurt-1"
    assert job.overrides["transfer.concurrency"] == 20


@pytest.mark.parametrize(
    ("drop", "env", "match"),
    [
        ("", {"OME_AGENT_AUTH_TYPE": "OboToken"}, "auth_type 'OboToken' is not supported"),
        ("auth_type", {}, "needs auth_type"),
        ("  namespace", {}, r"source\.namespace.*OME_AGENT_SOURCE_NAMESPACE"),
        (
            "",
            {
                "OME_AGENT_TARGET_BUCKET_NAME": "model-store",
                "OME_AGENT_TARGET_REGION": "us-chicago-1",
            },
            "same bucket",
        ),
    ],
)
def test_replica_refuses_bad_configs(tmp_path: Path, drop: str, env: dict[str, str], match: str) -> None:
    path = tmp_path / "agent.yaml"
    lines = SAMPLE.splitlines()
    if drop:
        first = next(i for i, line in enumerate(lines) if line.startswith(drop + ":"))
        del lines[first]
    path.write_text("\n".join(lines) + "\n")
    config, _ = load_ome_config(path, "replica", environ=env)
    with pytest.raises(UsageError, match=match):
        replica_job(config)


def test_empty_variables_count_as_unset(sample: Path) -> None:
    config, report = load_ome_config(
        sample, "replica", environ={"OME_AGENT_AUTH_TYPE": "", "OME_AGENT_NUM_CONNECTIONS": ""}
    )
    assert config.auth_type == "UserPrincipal" and config.num_connections == 20
    assert report.set_keys["auth_type"] == "file"
