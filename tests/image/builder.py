"""Build the project's images with buildah (no container daemon) and run commands inside them as a pod would.

Building: ``buildah bud`` with the vfs storage driver and chroot isolation. The base is the
Containerfile's default (the UBI Python image) where a registry answers; where none does, a Debian
base is bootstrapped from the machine's own Debian mirror (``debootstrap --variant=minbase`` with
python3, venv, pip and CA certificates) and imported once. A TLS-intercepting proxy's CA reaches pip
as the Containerfile's optional ``ca-bundle`` build secret, never as a layer.

Running: the image is mounted and entered with ``chroot`` inside a private mount namespace, the way
a restricted pod runs it: the root file system read-only, ``/tmp`` a fresh tmpfs (the pods' emptyDir),
an arbitrary UID in group 0, the image's own environment, working directory and entry point.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_BASE = "localhost/modelferry-base:bookworm"
ENV = {"STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}
UID = "100042:0"  # no fixed UID: OpenShift's restricted-v2 picks one from a range, in group 0


def buildah(*args: str, timeout: float = 1200, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["buildah", *args], env={**os.environ, **ENV}, capture_output=True, text=True, timeout=timeout, check=check
    )


def why_not() -> str | None:
    """Why images cannot be built here, or None."""
    for tool in ("buildah", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install buildah debootstrap)"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"cannot make a mount namespace here: {probe.stderr.strip()}"
    return None


def debian_mirror() -> str | None:
    """The machine's own Debian mirror (deb822 sources first, then the one-line format)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        text = path.read_text()
        if re.search(r"^Suites:.*\bbookworm\b", text, re.M) and (m := re.search(r"^URIs:\s*(\S+)", text, re.M)):
            return m.group(1)
    plain = Path("/etc/apt/sources.list")
    if plain.exists() and (m := re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\b", plain.read_text(), re.M)):
        return m.group(1)
    return None


def image_exists(name: str) -> bool:
    return buildah("inspect", "--type", "image", name, check=False).returncode == 0


def base_image(default: str) -> str:
    """The Containerfile's base if it can be pulled, else the bootstrapped Debian base (made once)."""
    if buildah("pull", "-q", default, timeout=120, check=False).returncode == 0:
        return default
    if image_exists(DEBIAN_BASE):
        return DEBIAN_BASE
    mirror = debian_mirror()
    if mirror is None or shutil.which("debootstrap") is None:
        raise RuntimeError(f"{default} cannot be pulled and there is no Debian mirror or debootstrap to build a base")
    with tempfile.TemporaryDirectory(prefix="modelferry-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip,ca-certificates",
             "bookworm", str(rootfs), mirror],
            capture_output=True, text=True, timeout=1200, check=True,
        )  # fmt: skip
        ctr = buildah("from", "scratch").stdout.strip()
        try:
            mnt = buildah("mount", ctr).stdout.strip()
            subprocess.run(["cp", "-a", f"{rootfs}/.", mnt], check=True)
            buildah("umount", ctr)
            buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", ctr)
            buildah("commit", "-q", ctr, DEBIAN_BASE)
        finally:
            buildah("rm", ctr, check=False)
    return DEBIAN_BASE


def ca_bundle() -> str | None:
    """The CA bundle this machine's pip trusts (a TLS-intercepting proxy's CA lives there), if any."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def build(
    containerfile: str, tag: str, *, build_args: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``buildah bud`` of ``containerfile`` in the checkout; the result (checked by the caller) keeps the log."""
    args = ["bud", "--layers=false", "-f", containerfile, "-t", tag]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    if (bundle := ca_bundle()) is not None:
        args += ["--secret", f"id=ca-bundle,src={bundle}"]
    return subprocess.run(
        ["buildah", *args, str(ROOT)], env={**os.environ, **ENV}, capture_output=True, text=True, timeout=1800,
        check=False, cwd=ROOT,
    )  # fmt: skip


def default_base(containerfile: str) -> str:
    text = (ROOT / containerfile).read_text()
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    if match is None:
        raise AssertionError(f"{containerfile} declares no PYTHON_IMAGE")
    return match.group(1)


@dataclass
class Image:
    """A built image mounted read-only for runs; ``config`` is its OCI config (Env, User, Entrypoint, ...)."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    size_text: str = "?"
    container: str = ""
    mountpoint: str = ""

    def open(self) -> None:
        data = json.loads(buildah("inspect", "--type", "image", self.name).stdout)
        self.config = data["OCIv1"]["config"]
        listed = json.loads(buildah("images", "--json").stdout)
        self.size_text = next((i["size"] for i in listed if self.name in (i.get("names") or [])), "?")
        self.container = buildah("from", "-q", self.name).stdout.strip()
        self.mountpoint = buildah("mount", self.container).stdout.strip()

    def close(self) -> None:
        if self.container:
            buildah("umount", self.container, check=False)
            buildah("rm", self.container, check=False)

    def command(
        self,
        argv: list[str] | None = None,
        *,
        env: dict[str, str] | None = None,
        shell: str | None = None,
        entrypoint: bool = True,
    ) -> list[str]:
        """The host argv that runs ``argv`` (after the entry point, unless ``entrypoint`` is off) or a ``shell``
        script in the image, pod-style."""
        environment = dict(item.split("=", 1) for item in self.config.get("Env") or [])
        environment.update(env or {})
        if shell is not None:
            inner = ["/bin/sh", "-c", shell]
        else:
            head = (self.config.get("Entrypoint") or []) if entrypoint else []
            inner = [*head, *(argv if argv is not None else self.config.get("Cmd") or [])]
        workdir = self.config.get("WorkingDir") or "/"
        root = shlex.quote(self.mountpoint)
        setup = " && ".join(
            [
                f"mount --bind {root} {root}",
                f"mount -o remount,bind,ro {root}",
                f"mount -t tmpfs -o mode=1777 tmpfs {root}/tmp",
                f"mount -t proc proc {root}/proc",
                f"mount --rbind /dev {root}/dev",
            ]
        )
        env_args = " ".join(shlex.quote(f"{k}={v}") for k, v in environment.items())
        enter = shlex.quote(f"cd {shlex.quote(workdir)} && exec " + '"$@"')
        run = f"exec chroot --userspec={UID} {root} /usr/bin/env -i {env_args} /bin/sh -c {enter} sh " + " ".join(
            shlex.quote(a) for a in inner
        )
        return ["unshare", "-m", "--", "/bin/sh", "-c", f"{setup} && {run}"]

    def run(self, argv: list[str] | None = None, *, env: dict[str, str] | None = None, shell: str | None = None,
            entrypoint: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            self.command(argv, env=env, shell=shell, entrypoint=entrypoint),
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
