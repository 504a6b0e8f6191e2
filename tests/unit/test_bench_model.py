"""The benchmark's model generator writes real safetensors files and consistent protocol documents."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_generated_shards_are_valid_safetensors_with_matching_documents(tmp_path: Path) -> None:
    gen = _load("gen_model")
    files = gen.generate(tmp_path, 3 << 20, shards=2)
    shards = [f for f in files if f.lfs]
    assert len(shards) == 2
    safetensors = pytest.importorskip("safetensors")
    for f in shards:
        path = tmp_path / "files" / f.path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256
        with safetensors.safe_open(str(path), framework="numpy") as st:
            assert list(st.keys())
    tree = json.loads((tmp_path / "api" / "tree.json").read_text())
    assert {e["path"]: e["lfs"]["oid"] for e in tree if "lfs" in e} == {f.path: f.sha256 for f in shards}
    assert json.loads((tmp_path / "api" / "revision.json").read_text())["sha"] == gen.COMMIT
    assert gen.generate(tmp_path, 3 << 20, shards=2) == files  # reused, not rewritten


def test_nginx_config_renders_headers_for_every_file(tmp_path: Path) -> None:
    gen = _load("gen_model")
    server = _load("nginx_server")
    files = gen.generate(tmp_path, 1 << 20, shards=1)
    conf = server.render(tmp_path / "ng", tmp_path, files, {"limited": 1, "unlimited": 2}, "50m")
    assert "limit_rate 50m;" in conf and "limit_rate 0;" in conf
    for f in files:
        assert f"/resolve/{gen.COMMIT}/{f.path}" in conf
    assert "$mf_etag" in conf and "${" not in conf
