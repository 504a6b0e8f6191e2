"""BaseModel ``spec.storage.decrypt``: the agent decrypts enigma files on the way to the node."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelferry.cli.main import main
from modelferry.controller.agent.gopher import wants_decrypt
from modelferry.controller.agent.tasks import TaskType
from tests.integration.test_agent_gopher import basemodel, make, task


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ({"decrypt": True}, True),
        ({"parameters": {"decrypt": "true"}}, True),
        ({"parameters": {"decrypt": "no"}}, False),
        ({}, False),
    ],
)
def test_decrypt_flag(storage: dict[str, object], expected: bool) -> None:
    assert wants_decrypt(storage) is expected


def test_agent_decrypts_enigma_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    weights = os.urandom(3 * 1024 * 1024 + 5)
    (plain / "model.bin").write_bytes(weights)
    (plain / "config.json").write_text('{"model_type": "bert"}')
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    with pytest.raises(SystemExit) as done:
        main(["enigma", "encrypt", str(plain), "--output", str(tmp_path / "bucket"), "--key-file", str(key)])
    assert done.value.code == 0
    assert (tmp_path / "bucket/model.bin").read_bytes() != weights

    monkeypatch.setenv("MODELFERRY_ENIGMA__LOCAL__KEY_FILE", str(key))
    root = tmp_path / "models"
    root.mkdir()
    gopher, sink, _ = make(root)
    gopher.run(task(TaskType.DOWNLOAD, basemodel(f"file://{tmp_path / 'bucket'}", storage={"decrypt": True})))
    assert sink.statuses() == ["Updating", "Ready"]
    assert (root / "team/minilm/model.bin").read_bytes() == weights

    # Without the flag the agent would place ciphertext; with a wrong key nothing lands.
    monkeypatch.setenv("MODELFERRY_ENIGMA__LOCAL__KEY_FILE", str(tmp_path / "other"))
    (tmp_path / "other").write_bytes(os.urandom(32))
    gopher.run(
        task(TaskType.DOWNLOAD, basemodel(f"file://{tmp_path / 'bucket'}", name="m2", storage={"decrypt": True}))
    )
    assert sink.statuses()[-1] == "Failed"
    assert not (root / "team/m2").exists()
