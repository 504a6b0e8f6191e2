"""The image tier: build the Containerfile once per session (minutes), then check it from the inside.

Off by default (marker ``image``); CI runs it after the main suite with ``pytest -m image tests/image``.
It skips, saying why, where buildah or a mount namespace is not available.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.image import builder

TAG = "localhost/modelferry:ci"


@pytest.fixture(scope="session")
def image() -> Iterator[builder.Image]:
    reason = builder.why_not()
    if reason is not None:
        pytest.skip(f"image tier: {reason}")
    started = time.monotonic()
    base = builder.base_image(builder.default_base("Containerfile"))
    built = builder.build("Containerfile", TAG, build_args={"PYTHON_IMAGE": base})
    assert built.returncode == 0, f"the image did not build:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}"
    handle = builder.Image(TAG)
    handle.open()
    print(f"\nimage {TAG} on {base}: {handle.size_text}, built in {time.monotonic() - started:.0f} s")
    try:
        yield handle
    finally:
        handle.close()
