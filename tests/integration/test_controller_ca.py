"""The running controller (against the API emulator) renders Jobs that mount the trusted CA ConfigMap."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.test_controller_modelsync import API, HF, TARGET, modelsync
from tests.servers.kube import KubeEmulator
from tests.servers.kube_controller import Harness, eventually, running


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with running(KubeEmulator(garbage_collect=False)) as h:
        yield h


async def test_modelsync_job_mounts_the_named_ca_configmap_and_points_the_variables_at_it(harness: Harness) -> None:
    for obj in (TARGET, HF):
        await harness.apply(obj)
    await harness.apply(modelsync("with-ca", job={"caConfigMap": "corp-ca"}), API, "modelsyncs")
    await harness.apply(modelsync("platform"), API, "modelsyncs")
    await harness.start()
    named = await eventually(lambda: harness.job("modelsync-with-ca"))
    pod = named["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "trusted-ca"]
    assert volume["configMap"]["name"] == "corp-ca" and volume["configMap"]["optional"] is False
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "trusted-ca")
    assert env["MODELFERRY_TLS__CA_BUNDLE"] == mount["mountPath"] and mount["readOnly"] is True

    platform = await eventually(lambda: harness.job("modelsync-platform"))
    [volume] = [v for v in platform["spec"]["template"]["spec"]["volumes"] if v["name"] == "trusted-ca"]
    assert volume["configMap"]["name"] == "odh-trusted-ca-bundle" and volume["configMap"]["optional"] is True
