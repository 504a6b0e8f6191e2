"""Reference pages under docs/reference/, generated from the code.

``python -m tools.refdocs`` writes them; ``python -m tools.refdocs --check`` exits 1 naming every page
that differs from what the code says (the test suite runs the same comparison).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tools.refdocs import cli_page, crd_page, metrics_page, settings_page

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "reference"

PAGES: dict[str, Callable[[], str]] = {
    "cli.md": cli_page.render,
    "settings.md": settings_page.render,
    "metrics.md": metrics_page.render,
    "crds.md": crd_page.render,
}


def generate() -> dict[str, str]:
    """Page file name -> its Markdown."""
    return {name: render() for name, render in PAGES.items()}


def stale(out: Path, pages: dict[str, str]) -> list[str]:
    """Pages under ``out`` that are missing or differ from ``pages``, and Markdown files no generator writes."""
    differ = [name for name, text in pages.items() if not (out / name).is_file() or (out / name).read_text() != text]
    extra = [p.name for p in out.glob("*.md") if p.name not in pages] if out.is_dir() else []
    return sorted(differ + extra)
