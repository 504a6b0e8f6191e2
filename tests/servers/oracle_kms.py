"""A stand-in for Oracle OCI Vault and KMS, enough for the ``oci`` SDK's clients.

One threaded HTTP server answers, on one port:

- KmsVaultClient ``GET /20180608/vaults/{id}`` (crypto and management endpoints point back here)
- KmsManagementClient ``GET /20180608/keys?compartmentId=``
- KmsCryptoClient ``POST /20180608/generateDataEncryptionKey``, ``/encrypt``, ``/decrypt``
- SecretsClient ``POST /20190301/secretbundles/actions/getByName?secretName=&vaultId=``
- VaultsClient ``POST /20180608/secrets``

Request signatures are not checked. Keys can be rotated (new versions; old ones
still decrypt) and disabled (every crypto call answers 409 IncorrectState), as
OCI does. Errors are JSON ``{"code", "message"}``.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat


@dataclass
class FakeKey:
    id: str
    name: str
    compartment_id: str
    vault_id: str
    versions: list[bytes] = field(default_factory=lambda: [os.urandom(32)])
    enabled: bool = True


@dataclass
class OracleKMSState:
    compartment_id: str = "ocid1.compartment.oc1..test"
    vault_id: str = "ocid1.vault.oc1.test.vault"
    keys: dict[str, FakeKey] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> secret
    calls: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_key(self, name: str) -> FakeKey:
        key = FakeKey(f"ocid1.key.oc1.test.{uuid.uuid4().hex[:12]}", name, self.compartment_id, self.vault_id)
        self.keys[key.id] = key
        return key

    def seal(self, key: FakeKey, plaintext: bytes) -> str:
        version = len(key.versions) - 1
        iv = os.urandom(12)
        body = version.to_bytes(2, "big") + iv + AESGCM(key.versions[version]).encrypt(iv, plaintext, key.id.encode())
        return base64.b64encode(body).decode()

    def open(self, key: FakeKey, ciphertext: str) -> bytes | None:
        try:
            raw = base64.b64decode(ciphertext, validate=True)
            version = int.from_bytes(raw[:2], "big")
            return AESGCM(key.versions[version]).decrypt(raw[2:14], raw[14:], key.id.encode())
        except (ValueError, IndexError, InvalidTag):
            return None


class _Handler(BaseHTTPRequestHandler):
    state: OracleKMSState
    base: str

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("opc-request-id", uuid.uuid4().hex)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, {"code": code, "message": message})

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        doc: dict[str, Any] = json.loads(raw or b"{}")
        return doc

    def _key(self, key_id: str) -> FakeKey | None:
        key = self.state.keys.get(key_id)
        if key is None:
            self._error(404, "NotAuthorizedOrNotFound", f"key {key_id} not found or not authorized")
            return None
        if not key.enabled:
            self._error(409, "IncorrectState", f"key {key_id} is disabled")
            return None
        return key

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        self.state.calls.append(f"GET {url.path}")
        if url.path.startswith("/20180608/vaults/"):
            vault_id = url.path.rsplit("/", 1)[1]
            if vault_id != self.state.vault_id:
                return self._error(404, "NotAuthorizedOrNotFound", "vault not found")
            return self._send(
                200,
                {
                    "id": vault_id,
                    "compartmentId": self.state.compartment_id,
                    "cryptoEndpoint": self.base,
                    "managementEndpoint": self.base,
                    "displayName": "test-vault",
                    "lifecycleState": "ACTIVE",
                    "vaultType": "DEFAULT",
                },
            )
        if url.path == "/20180608/keys":
            compartment = (query.get("compartmentId") or [""])[0]
            keys = [
                {
                    "id": k.id,
                    "displayName": k.name,
                    "compartmentId": k.compartment_id,
                    "vaultId": k.vault_id,
                    "lifecycleState": "ENABLED" if k.enabled else "DISABLED",
                    "protectionMode": "SOFTWARE",
                    "algorithm": "AES",
                }
                for k in self.state.keys.values()
                if k.compartment_id == compartment
            ]
            return self._send(200, keys)
        return self._error(404, "NotFound", f"no route for GET {url.path}")

    def do_POST(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        doc = self._body()
        self.state.calls.append(f"POST {url.path}")
        if url.path == "/20180608/generateDataEncryptionKey":
            key = self._key(doc.get("keyId", ""))
            if key is None:
                return None
            length = int((doc.get("keyShape") or {}).get("length", 32))
            plain = os.urandom(length)
            out = {"ciphertext": self.state.seal(key, plain)}
            if doc.get("includePlaintextKey"):
                out["plaintext"] = base64.b64encode(plain).decode()
            return self._send(200, out)
        if url.path == "/20180608/encrypt":
            key = self._key(doc.get("keyId", ""))
            if key is None:
                return None
            plain = base64.b64decode(doc["plaintext"])
            return self._send(200, {"ciphertext": self.state.seal(key, plain), "keyId": key.id})
        if url.path == "/20180608/decrypt":
            key = self._key(doc.get("keyId", ""))
            if key is None:
                return None
            plain_or_none = self.state.open(key, doc.get("ciphertext", ""))
            if plain_or_none is None:
                return self._error(400, "InvalidParameter", "the ciphertext cannot be decrypted with this key")
            return self._send(200, {"plaintext": base64.b64encode(plain_or_none).decode(), "keyId": key.id})
        if url.path == "/20190301/secretbundles/actions/getByName":
            name = (query.get("secretName") or [""])[0]
            secret = self.state.secrets.get(name)
            if secret is None or (query.get("vaultId") or [""])[0] != secret["vaultId"]:
                return self._error(404, "NotAuthorizedOrNotFound", f"secret {name} not found")
            return self._send(
                200,
                {
                    "secretId": secret["id"],
                    "versionNumber": 1,
                    "secretBundleContent": {"contentType": "BASE64", "content": secret["content"]},
                },
            )
        if url.path == "/20180608/secrets":
            name = doc["secretName"]
            with self.state.lock:
                if name in self.state.secrets:
                    return self._error(409, "Conflict", f"secret {name} exists")
                secret = {
                    "id": f"ocid1.vaultsecret.oc1.test.{uuid.uuid4().hex[:12]}",
                    "secretName": name,
                    "vaultId": doc["vaultId"],
                    "keyId": doc["keyId"],
                    "compartmentId": doc["compartmentId"],
                    "content": doc["secretContent"]["content"],
                    "lifecycleState": "ACTIVE",
                }
                self.state.secrets[name] = secret
            return self._send(200, {k: v for k, v in secret.items() if k != "content"})
        return self._error(404, "NotFound", f"no route for POST {url.path}")


@dataclass
class OracleKMSServer:
    endpoint: str
    state: OracleKMSState

    def write_oci_config(self, directory: str) -> str:
        """An OCI config file with a fresh RSA key (the stand-in ignores signatures)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = os.path.join(directory, "oci_api_key.pem")
        with open(pem, "wb") as fh:
            fh.write(key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption()))
        path = os.path.join(directory, "oci_config")
        with open(path, "w") as fh:
            fh.write(
                "[DEFAULT]\n"
                "user=ocid1.user.oc1..test\n"
                "fingerprint=11:22:33:44:55:66:77:88:99:00:aa:bb:cc:dd:ee:ff\n"
                f"key_file={pem}\n"
                "tenancy=ocid1.tenancy.oc1..test\n"
                "region=us-chicago-1\n"
            )
        return path


@contextmanager
def oracle_kms_server() -> Iterator[OracleKMSServer]:
    """Run the stand-in on 127.0.0.1 with an ephemeral port."""
    state = OracleKMSState()
    handler: type[_Handler] = type("Handler", (_Handler,), {"state": state, "base": ""})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    handler.base = base
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield OracleKMSServer(base, state)
    finally:
        httpd.shutdown()
        httpd.server_close()
