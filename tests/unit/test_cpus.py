"""The CPUs a process may use: a container's CPU quota caps the affinity mask."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from modelferry.cpus import cgroup_quota, usable_cpus


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "200000 100000\n"}, 2.0),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4.0),
        ({}, None),
    ],
)
def test_the_cpu_quota_of_a_container_is_read_from_cgroup_v2_or_v1(
    tmp_path: Path, files: dict[str, str], quota: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_quota(str(tmp_path)) == quota
    cpus = usable_cpus(str(tmp_path))
    assert cpus >= 1
    if quota is not None:
        assert cpus <= math.ceil(quota)
