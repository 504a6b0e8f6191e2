"""Run nginx as a non-daemon child with a generated config serving the benchmark model.

Two ports serve the same files: ``limited`` with ``limit_rate`` per connection and
``unlimited`` without. Each speaks enough of the Hugging Face Hub protocol for
huggingface_hub and modelferry, and enough of S3 (path style, GET/HEAD with ranges,
a static ListObjectsV2 page) for boto3 and modelferry.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template

from gen_model import BUCKET, COMMIT, PREFIX, REPO, GeneratedFile, list_objects_xml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers.tlsca import make_private_ca

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Endpoints:
    """Base URLs of the running nginx."""

    limited: str
    unlimited: str
    https: str  # unlimited, behind TLS with a private CA
    ca_file: str  # the CA that signed the https endpoint's certificate
    pid: int = 0  # nginx's master process (its workers do the serving and the encrypting)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds spent so far by nginx's workers (the server's share of a run)."""
        return sum(_cpu_seconds(child) for child in _children(self.pid))


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(c) for c in fh.read().split()]
    except OSError:
        return []


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render(
    prefix: Path,
    data: Path,
    files: list[GeneratedFile],
    ports: dict[str, int],
    limit_rate: str,
    cert: tuple[Path, Path] | None = None,
) -> str:
    """The nginx.conf text for ``ports`` ({"limited": p1, "unlimited": p2, "https": p3 with ``cert``})."""
    base = f"/{REPO}/resolve/{COMMIT}/"
    etag_map = "\n".join(f'        "{base}{f.path}" "{f.sha256 if f.lfs else f.git_sha1}";' for f in files)
    size_map = "\n".join(f'        "{base}{f.path}" "{f.size}";' for f in files)
    server = Template((HERE / "nginx_server.tmpl").read_text())
    servers = "\n".join(
        server.substitute(
            port=port,
            limit_rate=limit_rate if name == "limited" else "0",
            listen_tls=" ssl" if name == "https" else "",
            tls=(
                f"        ssl_certificate {cert[0]};\n        ssl_certificate_key {cert[1]};\n"
                "        ssl_protocols TLSv1.2 TLSv1.3;\n"
                # Kernel TLS where the kernel has it (sendfile then encrypts in the kernel); a no-op elsewhere.
                "        ssl_conf_command Options KTLS;\n"
                if name == "https" and cert
                else ""
            ),
            repo=REPO,
            commit=COMMIT,
            bucket=BUCKET,
            prefix=PREFIX,
            data=data,
        )
        for name, port in ports.items()
    )
    main = Template((HERE / "nginx.conf.tmpl").read_text())
    return main.substitute(prefix=prefix, etag_map=etag_map, size_map=size_map, servers=servers)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on {port} within {timeout}s")


@contextlib.contextmanager
def run_nginx(workdir: Path, data: Path, files: list[GeneratedFile], limit_rate: str = "50m") -> Iterator[Endpoints]:
    """Start nginx (``nginx`` on PATH or /usr/sbin/nginx) and stop it on exit."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise SystemExit("nginx is not installed: apt-get install -y nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {"limited": free_port(), "unlimited": free_port(), "https": free_port()}
    ca = make_private_ca(workdir / "tls", name="modelferry bench CA")
    # nginx's ETag for static files is "<mtime hex>-<size hex>"; list the objects with it.
    etags = {f.path: f"{int((data / 'files' / f.path).stat().st_mtime):x}-{f.size:x}" for f in files}
    (data / "api" / "list.xml").write_text(list_objects_xml(files, etags))
    conf = workdir / "nginx.conf"
    conf.write_text(render(workdir, data.resolve(), files, ports, limit_rate, (ca.cert_file, ca.key_file)))
    proc = subprocess.Popen([binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")])
    try:
        for port in ports.values():
            _wait_port(port, proc)
        yield Endpoints(
            limited=f"http://127.0.0.1:{ports['limited']}",
            unlimited=f"http://127.0.0.1:{ports['unlimited']}",
            https=f"https://127.0.0.1:{ports['https']}",
            ca_file=str(ca.ca_file),
            pid=proc.pid,
        )
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful stop of master and workers
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
