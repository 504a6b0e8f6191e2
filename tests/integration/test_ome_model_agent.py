"""OME's model agent swapped for ours: its objects, flags, pod args, labels, ConfigMap, metrics and alerts.

The seed's own YAML and command lines are used verbatim (seed 002: Configuration Reference,
Debug Mode, Comprehensive Metrics, Alerting Rules).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from modelferry.cli.agent import agent_command, apply_ome_environment, settings_from_options
from modelferry.cli.main import cli, hoist_global_options
from modelferry.controller.agent.aggregate import aggregate_once
from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.kube.client import Kube, build_api_client
from modelferry.errors import UsageError
from tests.integration.test_agent_kube import write_model
from tests.integration.test_oracle import write_oci_config
from tests.servers.hfhub import FakeHub, HubRepo
from tests.servers.kube import KubeEmulator, ThreadedKubeEmulator
from tests.servers.oracle import OracleServer

ROOT = Path(__file__).resolve().parents[2]
OME = "ome.io/v1beta1"

# Seed 002, "Debug Mode", verbatim.
SEED_DEBUG_POD = """
spec:
  containers:
  - name: model-agent
    args:
    - --log-level=debug
    - --log-format=json
"""

# Seed 002, "Alerting Rules", verbatim.
SEED_ALERTS = """
groups:
- name: model-agent
  rules:
  - alert: ModelDownloadFailure
    expr: increase(model_agent_downloads_failed_total[5m]) > 0
    for: 2m
    annotations:
      summary: "Model download failure detected"

  - alert: ModelAgentDown
    expr: up{job="model-agent"} == 0
    for: 1m
    annotations:
      summary: "Model Agent is down"
"""

# Seed 002, "Configuration Reference": every flag with a value other than its default.
SEED_FLAGS = [
    "--download-retry=7",
    "--concurrency=8",
    "--multipart-concurrency=2",
    "--num-download-worker=3",
    "--models-root-dir=/data/models",
    "--temp-dir=/data/tmp",
    "--cleanup-temp=false",
    "--node-name=gpu-7",
    "--namespace=ome-system",
    "--node-label-retry=9",
    "--log-level=warn",
    "--log-format=json",
    "--port=9090",
    "--metrics-port=9091",
    "--config-map-sync-interval=45s",
    "--model-watch-resync-period=1h30m",
    "--max-concurrent-reconciles=4",
]


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for doc in yaml.safe_load_all((ROOT / "tests/fixtures/ome/crds.yaml").read_text()):
        if doc["kind"] == "CustomResourceDefinition":
            for version in doc["spec"]["versions"]:
                key = (f"{doc['spec']['group']}/{version['name']}", doc["spec"]["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def fixture_docs() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((ROOT / "tests/fixtures/ome/crds.yaml").read_text()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(probe: Any, what: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"agent exited ({proc.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- flags and options ------------------------------------------------------------------------------


def test_every_seed_flag_is_accepted_with_its_meaning() -> None:
    args = hoist_global_options(["agent", *SEED_FLAGS], set())
    assert args[:2] == ["--log-level=warn", "--log-format=json"]  # the group's options, hoisted
    params = agent_command.make_context("agent", args[3:]).params
    settings = settings_from_options(params)
    opts = settings.agent
    assert (opts.download_retries, opts.workers, opts.label_retries) == (7, 3, 9)
    assert (opts.models_root, opts.temp_dir, opts.cleanup_temp) == ("/data/models", "/data/tmp", False)
    assert (opts.node_name, opts.namespace) == ("gpu-7", "ome-system")
    assert (opts.port, opts.metrics_port, opts.max_concurrent_reconciles) == (9090, 9091, 4)
    assert (opts.reconcile_interval, opts.resync_interval) == (45.0, 5400.0)
    assert settings.transfer.concurrency == 16  # 8 files x 2 parts
    assert not opts.watch_ome and settings.label_prefix() == "models.modelferry.io"


def test_ome_defaults_apply_with_watch_ome_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    ome = settings_from_options(agent_command.make_context("agent", ["--node-name=n", "--watch-ome"]).params)
    assert (ome.agent.namespace, ome.agent.workers, ome.agent.reconcile_interval) == ("ome", 5, 30.0)
    assert ome.label_prefix() == "models.ome.io" and ome.group_version() == ("ome.io", "v1beta1")
    ours = settings_from_options(agent_command.make_context("agent", ["--node-name=n"]).params)
    assert (ours.agent.namespace, ours.agent.workers) == ("modelferry", 2)
    # What the user set wins over OME's defaults.
    monkeypatch.setenv("MODELFERRY_AGENT__WORKERS", "9")
    mixed = settings_from_options(
        agent_command.make_context("agent", ["--node-name=n", "--watch-ome=true", "--namespace=x"]).params
    )
    assert (mixed.agent.namespace, mixed.agent.workers, mixed.agent.watch_ome) == ("x", 9, True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--node-name=n", "--cleanup-temp=maybe"], "not a boolean"),
        (["--node-name=n", "--config-map-sync-interval=soon"], "not a duration"),
        (["--node-name=n", "--concurrency=0"], "--concurrency"),
        (["--node-name=n", "--num-download-worker=0"], "workers"),
    ],
)
def test_bad_ome_flag_values_are_usage_errors(argv: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["agent", *argv])
    if isinstance(result.exception, UsageError):  # ours: main() exits 2 for it
        assert message in str(result.exception)
    else:  # click's own usage errors
        assert result.exit_code == 2 and message in result.output


def test_group_options_after_any_subcommand() -> None:
    # OME-Agent's `enigma --config X --debug` and the agent's flags after the subcommand reach the group.
    assert hoist_global_options(["enigma", "--config", "x.yaml", "--debug"], set()) == [
        "--debug",
        "enigma",
        "--config",
        "x.yaml",
    ]
    assert hoist_global_options(["agent", "--log-level", "debug", "--port=1"], set()) == [
        "--log-level",
        "debug",
        "agent",
        "--port=1",
    ]
    # A trainer's own flags after `--` and a subcommand's own --debug stay put.
    assert hoist_global_options(["training-agent", "--", "python", "t.py", "--debug"], set())[0] == "training-agent"
    assert hoist_global_options(["hf-download", "--debug"], {"--debug"}) == ["hf-download", "--debug"]
    result = CliRunner().invoke(cli, ["agent", "--log-level=debug", "--log-format=json"])
    assert isinstance(result.exception, UsageError) and "node name" in str(result.exception)


def test_ome_environment_variables() -> None:
    settings = settings_from_options(agent_command.make_context("agent", ["--node-name=n"]).params)
    apply_ome_environment(settings, {"OCI_CONFIG_FILE": "/etc/oci/config", "HUGGINGFACE_TOKEN": "hf_abc"})
    assert settings.source.oci.config_file == "/etc/oci/config"
    assert settings.source.hf.token.get_secret_value() == "hf_abc"
    # HF_TOKEN and our own settings win over OME's names.
    other = settings_from_options(agent_command.make_context("agent", ["--node-name=n"]).params)
    apply_ome_environment(other, {"HUGGINGFACE_TOKEN": "hf_abc", "HF_TOKEN": "hf_mine"})
    assert other.source.hf.token is None


# --- monitoring objects -------------------------------------------------------------------------------


def test_monitoring_component_carries_the_seed_alerts_and_scrapes_the_agent(tmp_path: Path) -> None:
    overlay = tmp_path / "mon"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(ROOT / "kustomize" / "base", overlay)],
                "components": [os.path.relpath(ROOT / "kustomize" / "components" / "monitoring", overlay)],
            }
        )
    )
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True)
    objects = list(yaml.safe_load_all(out.stdout))
    rule = next(o for o in objects if o["kind"] == "PrometheusRule" and o["metadata"]["name"] == "modelferry-agent")
    assert rule["spec"]["groups"] == yaml.safe_load(SEED_ALERTS)["groups"]
    monitor = next(o for o in objects if o["kind"] == "PodMonitor" and o["metadata"]["name"] == "modelferry-agent")
    agent = next(o for o in objects if o["kind"] == "DaemonSet")
    pod_labels = agent["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    ports = {p["name"] for p in agent["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "job", "replacement": "model-agent"} in endpoint["relabelings"]


# --- end to end: OME's objects, the seed's pod args, a real agent process -----------------------------


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    with FakeHub(token="hf_ome_secret") as server:
        write_model(tmp_path / "l8", 32)
        write_model(tmp_path / "l70", 48)
        server.add(HubRepo.from_dir("meta-llama/Meta-Llama-3-8B", tmp_path / "l8", gated=True))
        server.add(HubRepo.from_dir("meta-llama/Llama-70b-tiny", tmp_path / "l70", gated=True))
        yield server


def agent_argv(api_url: str, root: Path, port: int, metrics_port: int) -> list[str]:
    """The DaemonSet's command with the seed's args, then what a test needs (API URL, paths, ports)."""
    daemonset = yaml.safe_load((ROOT / "manifests/agent/daemonset.yaml").read_text())
    command = daemonset["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[0] == "modelferry"
    seed_args = yaml.safe_load(SEED_DEBUG_POD)["spec"]["containers"][0]["args"]
    local = ["--api-url", api_url, "--models-root-dir", str(root), f"--port={port}", f"--metrics-port={metrics_port}"]
    return [sys.executable, "-m", "modelferry", *command[1:], *seed_args, "--watch-ome", *local]


async def _aggregate(url: str) -> int:
    """One pass of the controller's status roll-up, configured for OME's objects."""
    settings = ControllerSettings(aggregate_api="ome.io/v1beta1", agent_namespace="ome")
    group, version = settings.aggregate_api.split("/")
    kube = Kube(await build_api_client(api_url=url))
    try:
        return await aggregate_once(kube, settings.agent_namespace, group, version)
    finally:
        await kube.close()


def test_aggregate_api_is_validated() -> None:
    with pytest.raises(ValidationError):
        ControllerSettings(aggregate_api="ome.io")


@pytest.fixture
def oracle(tmp_path: Path) -> Iterator[OracleServer]:
    with OracleServer(namespace="idqj093njucb") as server:
        server.create_bucket("model-store")
        write_model(tmp_path / "cr", 40)
        for path in sorted((tmp_path / "cr").iterdir()):
            server.put("model-store", f"cohere/command-r/{path.name}", path.read_bytes())
        yield server


def test_watch_ome_end_to_end(hub: FakeHub, oracle: OracleServer, tmp_path: Path) -> None:
    schemas = crd_schemas()
    root = tmp_path / "models"
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "NODE_NAME": "gpu-1",
        "OCI_CONFIG_FILE": str(write_oci_config(tmp_path)),  # OME's variable
        "MODELFERRY_SOURCE__OCI__ENDPOINT": oracle.endpoint,
        "HUGGINGFACE_TOKEN": "hf_ome_secret",  # OME's variable: the repos are gated
        "MODELFERRY_SOURCE__HF__ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "MODELFERRY_TRANSFER__FREE_SPACE_MARGIN": "0",
        "MODELFERRY_AGENT__RETRY_BACKOFF": "0.01",
        "PYTHONPATH": str(ROOT),
    }
    for name in ("POD_NAMESPACE", "HF_TOKEN", "MODELFERRY_AGENT__NAMESPACE"):
        env.pop(name, None)
    threaded = ThreadedKubeEmulator()
    with threaded as emu:
        node = {"metadata": {"name": "gpu-1", "labels": {"node.kubernetes.io/instance-type": "BM.GPU.H100.8"}}}
        threaded.call(emu.put_object("v1", "nodes", node))
        for doc in fixture_docs():
            if doc["kind"] == "CustomResourceDefinition":
                threaded.call(emu.put_object("apiextensions.k8s.io/v1", "customresourcedefinitions", doc))
            else:
                jsonschema.validate(doc, schemas[(doc["apiVersion"], doc["kind"])])
                threaded.call(emu.put_object(OME, doc["kind"].lower() + "s", doc))
        log = tmp_path / "agent.log"
        with log.open("wb") as sink:
            argv = agent_argv(emu.url, root, port, metrics_port)
            proc = subprocess.Popen(argv, env=env, stderr=sink, stdout=subprocess.DEVNULL)
            try:
                _check_agent(emu, threaded, proc, root, metrics_port)
            finally:
                proc.terminate()
                proc.wait(60)
    err = log.read_text()
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]  # --log-format=json
    assert any(line["level"] == "debug" for line in lines)  # --log-level=debug
    assert proc.returncode == 0
    assert "hf_ome_secret" not in err
    assert ("GET", "/n/idqj093njucb/b/model-store/o/cohere%2Fcommand-r%2Fmodel.safetensors") in oracle.requests


def _check_agent(
    emu: KubeEmulator, threaded: ThreadedKubeEmulator, proc: subprocess.Popen[bytes], root: Path, metrics_port: int
) -> None:
    def labels() -> dict[str, str]:
        return dict(((emu.get("v1", "nodes", "", "gpu-1") or {}).get("metadata") or {}).get("labels") or {})

    want = {
        "models.ome.io/clusterbasemodel.command-r": "Ready",
        "models.ome.io/clusterbasemodel.llama-3-8b": "Ready",
        "models.ome.io/default.basemodel.llama-70b": "Ready",
        "models.ome.io/default.basemodel.broken": "Failed",
    }
    wait_for(lambda: all(labels().get(k) == v for k, v in want.items()), "OME's node labels", proc)
    assert not any(k.startswith("models.modelferry.io/") for k in labels())

    # OME's per-node ConfigMap: namespace `ome` (OME's default), its labels, annotations and keys.
    cm = emu.get("v1", "configmaps", "ome", "gpu-1")
    assert cm is not None
    meta = cm["metadata"]
    assert meta["labels"]["models.ome/basemodel-status"] == "true" and meta["labels"]["node"] == "gpu-1"
    assert meta["annotations"] == {"models.ome.io/managed-by": "model-agent", "models.ome.io/node-name": "gpu-1"}
    entry = json.loads(cm["data"]["clusterbasemodel.llama-3-8b"])
    assert entry["name"] == "llama-3-8b" and entry["status"] == "Ready"
    assert entry["config"]["modelArchitecture"] == "LlamaForCausalLM"
    assert json.loads(cm["data"]["default.basemodel.llama-70b"])["status"] == "Ready"
    assert json.loads(cm["data"]["default.basemodel.broken"])["status"] == "Failed"

    # The bytes are on the node.
    placed = [p for p in root.rglob("model.safetensors") if ".modelferry" not in str(p)]
    assert len(placed) == 3

    # Status on OME's objects, rolled up from the ConfigMaps.
    assert asyncio.run(_aggregate(emu.url)) == 4
    cbm = emu.get(OME, "clusterbasemodels", "", "llama-3-8b") or {}
    assert cbm["status"]["nodesReady"] == ["gpu-1"] and cbm["status"]["state"] == "Ready"
    broken = emu.get(OME, "basemodels", "default", "broken") or {}
    assert broken["status"]["nodesFailed"] == ["gpu-1"] and broken["status"]["state"] == "Failed"

    # The seed's metric names and labels, on --metrics-port.
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(metric: str, **labels: str) -> float | None:
        return samples.get((metric, tuple(sorted(labels.items()))))

    cluster = {"model_type": "ClusterBaseModel", "namespace": "", "name": "llama-3-8b"}
    based = {"model_type": "BaseModel", "namespace": "default", "name": "llama-70b"}
    broken = {"model_type": "BaseModel", "namespace": "default", "name": "broken"}
    assert value("model_agent_downloads_success_total", **cluster) == 1
    assert value("model_agent_downloads_success_total", **based) == 1
    assert value("model_agent_downloads_failed_total", **broken) == 1
    assert value("model_agent_downloads_failed_total", **based) == 0  # as in the seed's example
    assert value("model_agent_download_duration_seconds_bucket", **based, le="43200.0") == 1
    assert (value("model_agent_download_bytes_total", **based) or 0) > 1000
    assert value("model_agent_verifications_total", **based, result="success") == 1
    assert value("model_agent_verification_duration_seconds_count") == 3
    assert value("model_agent_md5_checksum_failed_total", **broken) == 0
    assert value("model_agent_active_workers") == 0 and value("model_agent_task_queue_depth") == 0
    assert (value("model_agent_configmap_operations_total", operation="create", result="success")) == 1
    assert (value("model_agent_configmap_operations_total", operation="update", result="success") or 0) >= 1
