"""docs/reference/ is what the code says: CLI, settings, metrics and CRD pages are regenerated and compared."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from modelferry.cli.main import SUBCOMMANDS
from tools.refdocs import OUT, generate, settings_page, stale
from tools.refdocs.__main__ import main
from tools.refdocs.crd_page import CRDS, crd_files

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("modelferry", "controller", "sidecar")
METRIC_TYPES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return generate()


def sources() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


def test_committed_reference_pages_are_current(pages: dict[str, str]) -> None:
    behind = stale(OUT, pages)
    assert not behind, f"docs/reference/{behind} differ from the code; run: python -m tools.refdocs"


def test_check_names_every_page_that_drifted_and_a_write_mends_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--check", "--out", str(tmp_path)]) == 0
    settings = tmp_path / "settings.md"
    settings.write_text(
        settings.read_text().replace("MODELFERRY_TRANSFER__CONCURRENCY", "MODELFERRY_TRANSFER__THREADS")
    )
    (tmp_path / "old-page.md").write_text("# no generator writes this\n")
    (tmp_path / "crds.md").unlink()
    capsys.readouterr()
    assert main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "settings.md is not what the code generates" in err
    assert "crds.md is not what the code generates" in err
    assert "old-page.md" in err
    assert "cli.md" not in err
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--check", "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "old-page.md").exists()


def test_every_pydantic_settings_model_has_a_section(pages: dict[str, str]) -> None:
    """A new BaseSettings class (or a subclass of a listed one) anywhere in the packages must be listed."""
    listed = {name for _module, name, _readers in settings_page.MODELS}
    roots = {"BaseSettings"} | listed
    found = set()
    for path, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if bases & roots:
                    found.add(node.name)
    assert found == listed, f"settings models not in tools/refdocs/settings_page.MODELS: {found - listed}"
    for name in listed:
        assert f"\n## {name}\n" in pages["settings.md"]


def test_every_prometheus_metric_is_on_the_metrics_page(pages: dict[str, str]) -> None:
    names = set()
    for _path, tree in sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in METRIC_TYPES
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add((node.func.id, node.args[0].value))
    assert len(names) >= 20  # the controller's and the agent's
    for kind, name in names:
        exposed = name if kind != "Counter" or name.endswith("_total") else name + "_total"
        assert f"`{exposed}`" in pages["metrics.md"], f"{name} is missing from docs/reference/metrics.md"


def test_every_crd_and_every_command_is_documented(pages: dict[str, str]) -> None:
    crd_docs = [
        d
        for p in CRDS.glob("*.yaml")
        for d in yaml.safe_load_all(p.read_text())
        if d and d.get("kind") == "CustomResourceDefinition"
    ]
    assert {p.name for p in crd_files()} == {p.name for p in CRDS.glob("*.yaml") if p.name != "kustomization.yaml"}
    for doc in crd_docs:
        assert f"\n## {doc['spec']['names']['kind']}\n" in pages["crds.md"]
    for name in SUBCOMMANDS:
        assert f"\n## `modelferry {name}`\n" in pages["cli.md"]
    assert "\n## `modelferry sidecar run`\n" in pages["cli.md"]  # subcommands of groups too
