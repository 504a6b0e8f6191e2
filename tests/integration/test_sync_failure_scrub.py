"""The sync's own failure record (termination message and ``--json``) never carries a credential.

On main, ``$(MODELFERRY_SOURCE__HF__TOKEN)`` in a ModelSync's URI became the token inside the pod, and the
"repository not found" record quoted it into the pod's termination message and the ModelSync status.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_hf_sync import run_cli
from tests.servers.hfhub import FakeHub

TOKEN = "tenantTokenWithoutAKnownShape42"  # masked only because the process registered it


def test_expanded_token_in_uri_never_reaches_the_failure_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELFERRY_SOURCE__HF__TOKEN", TOKEN)
    log = tmp_path / "termination-log"
    with FakeHub() as hub:
        code = run_cli("sync", f"hf://org/{TOKEN}", str(tmp_path / "out"), "--hf-endpoint", hub.url,
                       "--json", "--termination-log", str(log))  # fmt: skip
    assert code == 3
    record = json.loads(log.read_text())
    printed = capsys.readouterr()
    assert record["reason"] and "***" in record["message"]
    for text in (log.read_text(), printed.out, printed.err):
        assert TOKEN not in text
    assert json.loads(printed.out) == record
