"""A 1 GiB file is encrypted and decrypted in constant memory (peak RSS measured in a subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import hashlib, json, os, resource, sys
from pathlib import Path
from modelferry.enigma import files
from modelferry.enigma.kms import ProviderCache
from modelferry.enigma.kms.local import LocalKeyProvider
from modelferry.enigma.settings import EnigmaSettings, LocalKeySettings
from modelferry.enigma.streams import LocalSink, LocalSource

def peak_kib():
    # VmHWM belongs to this address space; ru_maxrss survives execve and would count the forking
    # pytest process (moto, boto3...), so it is only the fall-back.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

root = Path(sys.argv[1])
key = root / "key"
key.write_bytes(os.urandom(32))
base = peak_kib()
src = LocalSource(root / "big.bin")
files.encrypt(src, lambda _n: LocalSink(root / "big.enc"), LocalKeyProvider(str(key)), 2 << 20, 8)
(root / "big.bin").unlink()
cache = ProviderCache(EnigmaSettings(local=LocalKeySettings(key_file=str(key))))
files.decrypt(LocalSource(root / "big.enc"), lambda _n: LocalSink(root / "big.out"), cache, 8)
peak = peak_kib()
check = hashlib.sha256()
with open(root / "big.out", "rb") as fh:
    while chunk := fh.read(8 << 20):
        check.update(chunk)
print(json.dumps({"base_kib": base, "peak_kib": peak, "sha256": check.hexdigest()}))
"""


@pytest.mark.slow
def test_one_gib_round_trip_under_100_mb_rss(tmp_path: Path) -> None:
    block = os.urandom(8 << 20)
    digest = hashlib.sha256()
    with open(tmp_path / "big.bin", "wb") as fh:
        for _ in range((1 << 30) // len(block)):
            fh.write(block)
            digest.update(block)
    del block
    # Eight workers: the most the default allows, so the most buffers in flight.
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["sha256"] == digest.hexdigest()
    # KiB; it includes the interpreter and imports (~43 MB).
    assert result["peak_kib"] < 100 * 1024, result
