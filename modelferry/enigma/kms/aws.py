"""AWS KMS: data keys from GenerateDataKey, unwrapped with Decrypt, bound by an encryption context.

The encryption context (``purpose=modelferry-enigma`` plus any configured pairs)
is stored in the key block so decryption needs no configuration but the
credentials; KMS refuses a Decrypt whose context differs.
"""

from __future__ import annotations

import os
from typing import Any

from modelferry.enigma.format import KeyBlock
from modelferry.enigma.kms.base import KeyProvider
from modelferry.enigma.settings import AWSKMSSettings
from modelferry.errors import (
    AccessDeniedError,
    IntegrityError,
    ModelferryError,
    NotFoundError,
    RetryableError,
    UsageError,
)
from modelferry.tls import AWS_VARIABLES, is_tls_failure, resolve_tls

BASE_CONTEXT = {"purpose": "modelferry-enigma"}

_DENIED = {
    "AccessDeniedException",
    "DisabledException",
    "KMSInvalidStateException",
    "IncorrectKeyException",
    "KeyUnavailableException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
}
_CORRUPT = {"InvalidCiphertextException"}
_RETRY = {"DependencyTimeoutException", "KMSInternalException", "ThrottlingException", "LimitExceededException"}


def translate(exc: Exception, what: str, key: str) -> ModelferryError:
    """botocore exceptions -> modelferry.errors, with the key named."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "")
        if code in ("DisabledException", "KMSInvalidStateException"):
            return AccessDeniedError(
                f"AWS KMS key {key} is disabled or pending deletion ({code}) during {what}",
                obj=key,
                hint="Enable the key (aws kms enable-key) or rewrap the files under another key",
            )
        if code in _DENIED:
            return AccessDeniedError(
                f"AWS KMS denied {what} with key {key}: {code} {message}",
                obj=key,
                hint="Check the credentials, the key policy (kms:GenerateDataKey, kms:Decrypt) and the key id",
            )
        if code in _CORRUPT:
            return IntegrityError(
                f"AWS KMS cannot decrypt the data key of this file ({code}): wrong key, wrong "
                "encryption context or a corrupt key block",
                obj=key,
            )
        if code == "NotFoundException":
            return NotFoundError(f"AWS KMS key {key} does not exist", obj=key, hint="Check --key-id and the region")
        if code in _RETRY or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
            return RetryableError(f"AWS KMS is unavailable for {what}: {code}", obj=key)
        return AccessDeniedError(f"AWS KMS refused {what}: {code} {message}", obj=key)
    if isinstance(exc, NoCredentialsError):
        return AccessDeniedError("no AWS credentials for KMS", hint="Set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, (EndpointConnectionError, BotoCoreError)):
        return RetryableError(f"cannot reach AWS KMS for {what}: {exc}", obj=key)
    return RetryableError(f"AWS KMS call failed for {what}: {exc}", obj=key)


class AWSKMSProvider(KeyProvider):
    """GenerateDataKey / Decrypt / ReEncrypt with an encryption context."""

    name = "aws-kms"

    def __init__(self, settings: AWSKMSSettings, client: Any = None) -> None:
        self.settings = settings
        self.tls = resolve_tls(own_variables=AWS_VARIABLES)
        if client is None:
            import boto3
            from botocore.config import Config

            session = boto3.Session(profile_name=settings.profile) if settings.profile else boto3.Session()
            region = settings.region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
            client = session.client(
                "kms",
                endpoint_url=settings.endpoint_url,
                region_name=region or "us-east-1",
                config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60),
                verify=self.tls.verify_arg(),
            )
        self.client = client

    def _context(self) -> dict[str, str]:
        return {**self.settings.encryption_context, **BASE_CONTEXT}

    def _key(self) -> str:
        if not self.settings.key_id:
            raise UsageError(
                "the aws provider needs a key id", hint="Pass --key-id or set MODELFERRY_ENIGMA__AWS__KEY_ID"
            )
        return self.settings.key_id

    def _call(self, what: str, key: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self.client, what)(**kwargs)
            return result
        except Exception as exc:
            if is_tls_failure(exc) and not hasattr(exc, "response"):
                raise self.tls.failure(self.settings.endpoint_url or "AWS KMS", exc, what=key) from exc
            raise translate(exc, what, key) from exc

    def new_data_key(self) -> tuple[bytes, KeyBlock]:
        key = self._key()
        context = self._context()
        out = self._call("generate_data_key", key, KeyId=key, KeySpec="AES_256", EncryptionContext=context)
        block = KeyBlock(self.name, str(out["KeyId"]), bytes(out["CiphertextBlob"]), {"context": context})
        return bytes(out["Plaintext"]), block

    def wrap(self, data_key: bytes) -> KeyBlock:
        key = self._key()
        context = self._context()
        out = self._call("encrypt", key, KeyId=key, Plaintext=data_key, EncryptionContext=context)
        return KeyBlock(self.name, str(out["KeyId"]), bytes(out["CiphertextBlob"]), {"context": context})

    def unwrap(self, block: KeyBlock) -> bytes:
        self.check_block(block)
        context = dict(block.params.get("context") or {})
        out = self._call(
            "decrypt", block.key_id, CiphertextBlob=block.wrapped_key, KeyId=block.key_id, EncryptionContext=context
        )
        return bytes(out["Plaintext"])

    def rewrap(self, block: KeyBlock) -> KeyBlock:
        """ReEncrypt server-side (the data key never leaves KMS) to the configured key or the same one."""
        self.check_block(block)
        context = dict(block.params.get("context") or {})
        target_key_id = self.settings.key_id or block.key_id
        out = self._call(
            "re_encrypt",
            block.key_id,
            CiphertextBlob=block.wrapped_key,
            SourceKeyId=block.key_id,
            SourceEncryptionContext=context,
            DestinationKeyId=target_key_id,
            DestinationEncryptionContext=context,
        )
        return KeyBlock(self.name, str(out["KeyId"]), bytes(out["CiphertextBlob"]), {"context": context})
