"""The README's kind quickstart block is where the e2e suite reads it, and ends with a visible result."""

from __future__ import annotations

from tests.e2e.test_quickstart import quickstart_lines


def test_the_quickstart_block_is_where_the_suite_reads_it() -> None:
    lines = quickstart_lines()
    assert lines[0].startswith("podman build") and "kind load" in lines[0]
    assert any("manifests/examples/quickstart.yaml" in line for line in lines)
    assert lines[-1] == "kubectl -n demo get modelsync tiny-model"
