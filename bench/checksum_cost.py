"""CPU per byte of the passes an upload can make: MD5 (Content-MD5), CRC32 (x-amz-checksum-crc32), sha256.

One thread, 64 MiB buffers (a default part), the best of ``--repeat`` passes over ``--gib`` GiB;
prints CPU seconds per GiB and GiB/s for each, as JSON lines.

    python bench/checksum_cost.py --gib 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
import zlib
from collections.abc import Callable

PASSES: dict[str, Callable[[bytes], object]] = {
    "md5": lambda b: hashlib.md5(b).digest(),
    "sha256": lambda b: hashlib.sha256(b).digest(),
    "crc32": zlib.crc32,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="GiB hashed per pass (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="passes per checksum; the best is kept (default 3)")
    args = parser.parse_args()
    buf = os.urandom(64 << 20)
    rounds = max(1, int(args.gib * 16))
    for name, fn in PASSES.items():
        best = float("inf")
        for _ in range(args.repeat):
            start = time.process_time()
            for _ in range(rounds):
                fn(buf)
            best = min(best, time.process_time() - start)
        gib = rounds / 16
        print(json.dumps({"pass": name, "cpu_s_per_gib": round(best / gib, 3), "gib_s": round(gib / best, 2)}))


if __name__ == "__main__":
    main()
