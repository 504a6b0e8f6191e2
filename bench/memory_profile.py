"""Where memory goes per file of a large tree: tracemalloc over the engine's per-file objects.

Builds the objects one ``modelferry sync`` holds for an N-file S3 prefix, stage by stage, with the
real classes: the listing (``ObjectInfo``), the plan (``make_plan``), the per-file transfer state
(``FileJob`` after ``reset``, as the engine creates one per file before it starts) and the manifest
entries written at the end. Prints bytes per file for each stage.

    python bench/memory_profile.py --files 100000
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelferry.storage.base import ObjectInfo
from modelferry.transfer.inflight import FileJob
from modelferry.transfer.manifest import ManifestEntry
from modelferry.transfer.plan import PlanOptions, make_plan


def listing(n: int) -> list[ObjectInfo]:
    """What an S3 listing of ``n`` small files yields (path, size, single-part ETag = MD5)."""
    out = []
    for i in range(n):
        md5 = f"{i:032x}"
        out.append(ObjectInfo(path=f"shard-{i % 100:03d}/file-{i:07d}.bin", size=1024 + i % 4096, md5=md5, etag=md5))
    return out


def measure(n: int) -> dict[str, float]:
    gc.collect()
    tracemalloc.start()
    stages: dict[str, float] = {}
    base = tracemalloc.get_traced_memory()[0]
    infos = listing(n)
    now = tracemalloc.get_traced_memory()[0]
    stages["listing (ObjectInfo)"], base = (now - base) / n, now
    plan = make_plan(infos, {}, options=PlanOptions())
    now = tracemalloc.get_traced_memory()[0]
    stages["plan (PlanItem, sorted)"], base = (now - base) / n, now
    jobs = []
    for item in plan.items:
        job = FileJob(item=item, part_size=64 << 20, want_part_md5=False)
        job.reset()
        jobs.append(job)
    now = tracemalloc.get_traced_memory()[0]
    stages["transfer state (FileJob)"], base = (now - base) / n, now
    entries = {i.path: ManifestEntry(path=i.path, size=i.size, sha256="0" * 64, source_etag=i.etag) for i in infos}
    now = tracemalloc.get_traced_memory()[0]
    stages["manifest entries"], base = (now - base) / n, now
    stages["total"] = sum(stages.values())
    stages["peak"] = tracemalloc.get_traced_memory()[1] / n
    tracemalloc.stop()
    del infos, plan, jobs, entries
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000, help="files in the generated tree (default 100000)")
    args = parser.parse_args()
    stages = measure(args.files)
    print(f"| stage | bytes per file ({args.files} files) |\n|---|---|")
    for name, value in stages.items():
        print(f"| {name} | {value:.0f} |")


if __name__ == "__main__":
    main()
