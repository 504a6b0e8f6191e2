"""A real Kubernetes control plane for tests: etcd + kube-apiserver (+ kube-controller-manager) on loopback.

The controller-runtime convention: ``KUBEBUILDER_ASSETS`` names a folder holding ``kube-apiserver`` and
``etcd`` (``setup-envtest use 1.36 -p path`` prints one) and optionally ``kube-controller-manager``.
Everything else is generated in a temporary folder: a private CA with the serving certificate, the
service-account signing key pair, static bearer tokens for an admin and the controller-manager. The API
server runs ``--authorization-mode=Node,RBAC`` with Pod Security and ValidatingAdmissionPolicy admission.
Each process runs in its own process group; ``stop()`` ends exactly those groups.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ASSETS_ENV = "KUBEBUILDER_ASSETS"
REQUIRED = ("kube-apiserver", "etcd")


def assets_or_reason() -> tuple[Path | None, str]:
    """The binaries' folder, or why the envtest tier cannot run."""
    value = os.environ.get(ASSETS_ENV, "")
    if not value:
        return None, f"{ASSETS_ENV} is unset: no kube-apiserver/etcd for the real API server tier (see docs/testing.md)"
    folder = Path(value)
    missing = [b for b in REQUIRED if not os.access(folder / b, os.X_OK)]
    if missing:
        return None, f"{ASSETS_ENV}={value} lacks {', '.join(missing)}"
    return folder, ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pem_key(key: Any) -> bytes:
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def write_pki(folder: Path) -> None:
    """ca.crt, apiserver.crt/.key for 127.0.0.1 and localhost, sa.key/sa.pub."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "envtest-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "apiserver.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "apiserver.key").write_bytes(_pem_key(key))
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "sa.key").write_bytes(_pem_key(sa))
    (folder / "sa.pub").write_bytes(
        sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


class ApiError(Exception):
    def __init__(self, code: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {code}: {body.get('message') or body}")
        self.code = code
        self.body = body


class ControlPlane:
    """``start()`` / ``stop()``; ``request()`` speaks to the API server as the admin (or a given token)."""

    def __init__(self, assets: Path, workdir: Path, *, controller_manager: bool = True) -> None:
        self.assets = assets
        self.dir = workdir
        self.want_kcm = controller_manager and os.access(assets / "kube-controller-manager", os.X_OK)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.admin_token = secrets.token_hex(16)
        self.kcm_token = secrets.token_hex(16)
        self.port = free_port()
        self.etcd_port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ssl = ssl.create_default_context()

    # --- processes ---------------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        with log:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _end(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_pki(self.dir)
        self.ssl.load_verify_locations(cafile=str(self.dir / "ca.crt"))
        (self.dir / "tokens.csv").write_text(
            f'{self.admin_token},envtest-admin,envtest-admin,"system:masters"\n'
            # One identity for all of the controller-manager's loops (clusters use one per loop).
            f'{self.kcm_token},system:kube-controller-manager,kcm,"system:masters"\n'
        )
        try:
            peer = free_port()
            self._spawn(
                "etcd",
                [str(self.assets / "etcd"), "--data-dir", str(self.dir / "etcd"),
                 "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                 "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", f"default=http://127.0.0.1:{peer}",
                 "--quota-backend-bytes", str(1 << 30)],
            )  # fmt: skip
            self.start_apiserver()
        except BaseException:
            self.stop()
            raise

    def start_apiserver(self) -> None:
        d = self.dir
        self._spawn(
            "kube-apiserver",
            [str(self.assets / "kube-apiserver"),
             f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
             "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
             f"--tls-cert-file={d / 'apiserver.crt'}", f"--tls-private-key-file={d / 'apiserver.key'}",
             f"--client-ca-file={d / 'ca.crt'}", f"--token-auth-file={d / 'tokens.csv'}",
             f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
             "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
             "--api-audiences=https://kubernetes.default.svc.cluster.local",
             "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
             "--authorization-mode=Node,RBAC",
             "--enable-admission-plugins=NodeRestriction,PodSecurity,ValidatingAdmissionPolicy",
             "--disable-admission-plugins=ServiceAccount",
             "--storage-media-type=application/json", "--enable-priority-and-fairness=false",
             "--endpoint-reconciler-type=none", "--profiling=false", "--v=1"],
        )  # fmt: skip
        self.wait_ready("kube-apiserver", "/readyz", 90)

    def start_controller_manager(self) -> None:
        """After the CRDs are installed, so the garbage collector watches their kinds from its first sync."""
        if not self.want_kcm:
            return
        kubeconfig = self.kubeconfig(self.kcm_token, "kcm")
        self._spawn(
            "kube-controller-manager",
            [str(self.assets / "kube-controller-manager"), f"--kubeconfig={kubeconfig}",
             f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
             f"--service-account-private-key-file={self.dir / 'sa.key'}", f"--root-ca-file={self.dir / 'ca.crt'}",
             "--controllers=garbagecollector,namespace,serviceaccount", "--leader-elect=false",
             "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--concurrent-gc-syncs=5", "--v=1"],
        )  # fmt: skip

    def restart_apiserver(self) -> None:
        """Stop the API server (watches break), start it again on the same port and etcd."""
        self._end("kube-apiserver")
        self.start_apiserver()

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            self._end(name)

    def wait_ready(self, name: str, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                self.request("GET", path)
                return
            except (OSError, ApiError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready after {timeout}s:\n{self.log_tail(name)}") from None
                time.sleep(0.3)

    # --- API access ----------------------------------------------------------------------------------------
    def kubeconfig(self, token: str, name: str) -> Path:
        path = self.dir / f"{name}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "envtest", "cluster": {"server": self.url, "certificate-authority": str(self.dir / "ca.crt")}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": "envtest", "user": name}}],
            "current-context": name,
        }  # fmt: skip
        path.write_text(json.dumps(config))
        return path

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = {"message": raw.decode(errors="replace")}
            raise ApiError(exc.code, detail) from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode(errors="replace")

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        kubeconfig = self.kubeconfig(self.admin_token, "admin")
        out = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", *args], input=stdin, capture_output=True, text=True, check=False
        )
        if out.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def service_account_token(
        self, namespace: str, name: str, seconds: int = 3600, pod: dict[str, Any] | None = None
    ) -> str:
        """A token of ``namespace/name`` through the TokenRequest API; bound to ``pod`` when given (it then
        names the pod's node, as a kubelet-mounted token does)."""
        spec: dict[str, Any] = {"expirationSeconds": seconds}
        if pod is not None:
            meta = pod["metadata"]
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]}
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
        return str(self.request("POST", path, body)["status"]["token"])

    def pod_on_node(self, namespace: str, name: str, service_account: str, node: str) -> dict[str, Any]:
        """A Pod scheduled to ``node`` (and the Node), for tokens bound to it; no kubelet will run it."""
        with contextlib.suppress(ApiError):
            self.request("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "nodeName": node,
                "serviceAccountName": service_account,
                "containers": [{"name": "agent", "image": "registry.invalid/envtest:1"}],
            },
        }
        return dict(self.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod))

    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """The namespace and its ``default`` ServiceAccount (no ServiceAccount controller needed)."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        with contextlib.suppress(ApiError):
            self.request("POST", "/api/v1/namespaces", body)
        sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
        with contextlib.suppress(ApiError):
            self.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts", sa)
