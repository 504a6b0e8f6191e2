"""Enigma throughput against a one-shot AES-256-GCM baseline from ``cryptography``.

The baseline seals the whole buffer with one ``AESGCM.encrypt`` call (in memory,
no I/O): the fastest anything built on that library can go on one core. Enigma
is measured doing real work: file in, chunks sealed or opened, file out (page
cache, no fsync so the disk does not dominate), at 1, 2, 4... worker threads.

    .venv/bin/python bench/enigma_bench.py --size-mib 512 --repeat 3

Prints a Markdown table (MB/s, and enigma as a percentage of the baseline).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from modelferry.enigma import files
from modelferry.enigma.crypto import ChunkCipher, new_header, seal_pipeline
from modelferry.enigma.format import DEFAULT_CHUNK_SIZE, KeyBlock
from modelferry.enigma.kms import ProviderCache
from modelferry.enigma.kms.local import LocalKeyProvider
from modelferry.enigma.settings import EnigmaSettings, LocalKeySettings
from modelferry.enigma.streams import LocalSink, LocalSource


class NoSyncSink(LocalSink):
    """LocalSink without fsync: the benchmark measures crypto and copies, not the disk."""

    def commit(self) -> None:
        os.fchmod(self.fd, self.mode)
        os.close(self.fd)
        self._closed = True
        os.replace(self.temp, self.final)


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        os.sync()  # flush earlier writes first, so write-back does not land in this run's time
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def memory_fill(data: bytes) -> Callable[[memoryview], int]:
    """A fill function over an in-memory buffer (no I/O)."""
    view = memoryview(data)
    pos = 0

    def fill(buf: memoryview) -> int:
        nonlocal pos
        take = min(len(buf), len(view) - pos)
        buf[:take] = view[pos : pos + take]
        pos += take
        return take

    return fill


def drain(chunks: Iterator[memoryview]) -> None:
    for _ in chunks:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512, help="file size in MiB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best is kept)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="enigma chunk size")
    parser.add_argument("--workers", type=int, nargs="*", default=None, help="worker counts [1 2 4 ... cores]")
    args = parser.parse_args()
    size = args.size_mib << 20
    cores = len(os.sched_getaffinity(0))
    workers = args.workers or sorted({1, 2, 4, 8, cores} & set(range(1, cores + 1)))

    with tempfile.TemporaryDirectory(prefix="enigma-bench-") as tmp:
        root = Path(tmp)
        data = os.urandom(size)
        (root / "plain.bin").write_bytes(data)
        key_file = root / "key"
        key_file.write_bytes(os.urandom(32))

        aead = AESGCM(os.urandom(32))
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, data, None)
        t_enc = best_of(args.repeat, lambda: aead.encrypt(nonce, data, None))
        t_dec = best_of(args.repeat, lambda: aead.decrypt(nonce, sealed, None))
        out = bytearray(size + 16)
        t_into = best_of(args.repeat, lambda: aead.encrypt_into(nonce, data, None, out))
        base_into = size / t_into / 1e6
        base_enc, base_dec = size / t_enc / 1e6, size / t_dec / 1e6
        key = os.urandom(32)
        mem_rows = []
        for n in workers:
            cipher = ChunkCipher(new_header(KeyBlock("local", "bench", b""), args.chunk_size, size), key)

            def in_memory(n: int = n, c: ChunkCipher = cipher) -> None:
                drain(seal_pipeline(c, memory_fill(data), size, n))

            mem_rows.append((n, size / best_of(args.repeat, in_memory) / 1e6))

        provider = LocalKeyProvider(str(key_file))
        cache = ProviderCache(EnigmaSettings(local=LocalKeySettings(key_file=str(key_file))))
        rows = []
        for n in workers:

            def enc(n: int = n) -> None:
                files.encrypt(
                    LocalSource(root / "plain.bin"),
                    lambda _s: NoSyncSink(root / "sealed.bin"),
                    provider,
                    args.chunk_size,
                    n,
                )

            def dec(n: int = n) -> None:
                files.decrypt(LocalSource(root / "sealed.bin"), lambda _s: NoSyncSink(root / "out.bin"), cache, n)

            e = size / best_of(args.repeat, enc) / 1e6
            d = size / best_of(args.repeat, dec) / 1e6
            rows.append((n, e, d))

    print(f"file {args.size_mib} MiB, chunk {args.chunk_size >> 10} KiB, {cores} cores, best of {args.repeat}\n")
    print("| what | encrypt MB/s | decrypt MB/s | vs baseline (enc / dec) |")
    print("|---|---:|---:|---:|")
    print(f"| one-shot AESGCM encrypt/decrypt, in memory, 1 core | {base_enc:.0f} | {base_dec:.0f} | 100% / 100% |")
    print(
        f"| one-shot AESGCM encrypt_into a warm buffer, 1 core | {base_into:.0f} | | {100 * base_into / base_enc:.0f}% / |"
    )
    for n, m in mem_rows:
        print(
            f"| enigma chunk pipeline, in memory, {n} worker{'s' if n > 1 else ''} | {m:.0f} | | {100 * m / base_enc:.0f}% / |"
        )
    for n, e, d in rows:
        print(
            f"| enigma file to file, {n} worker{'s' if n > 1 else ''} | {e:.0f} | {d:.0f} "
            f"| {100 * e / base_enc:.0f}% / {100 * d / base_dec:.0f}% |"
        )


if __name__ == "__main__":
    main()
