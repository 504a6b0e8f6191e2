"""Settings, errors, logging: the contracts every component relies on."""

from __future__ import annotations

import io
import json
import logging

import pytest

from modelferry.errors import (
    AccessDeniedError,
    IntegrityError,
    NotFoundError,
    RetryableError,
    ThrottledError,
    UsageError,
    exit_code_for,
)
from modelferry.logs import register_secret, scrub, setup_logging
from modelferry.settings import SyncSettings, masked, warn_unknown_env


def test_exit_codes_follow_the_contract() -> None:
    assert RetryableError("x").exit_code == 1
    assert ThrottledError("x", retry_after=3).retry_after == 3
    assert UsageError("x").exit_code == 2
    for cls in (NotFoundError, AccessDeniedError, IntegrityError):
        assert cls("x").exit_code == 3
    assert exit_code_for(ValueError("bug")) == 3
    assert RetryableError("x").retryable and not NotFoundError("x").retryable


def test_error_text_names_object_and_hint() -> None:
    err = NotFoundError("bucket does not exist", obj="s3://b", hint="Create it")
    assert str(err) == "bucket does not exist [s3://b]. Create it"


def test_settings_from_nested_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFERRY_TRANSFER__CONCURRENCY", "7")
    monkeypatch.setenv("MODELFERRY_SOURCE__S3__ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("MODELFERRY_SOURCE__S3__SECRET_ACCESS_KEY", "topsecretvalue")
    settings = SyncSettings()
    assert settings.transfer.concurrency == 7
    assert settings.source.s3.endpoint_url == "http://127.0.0.1:9000"
    dumped = json.dumps(masked(settings))
    assert "topsecretvalue" not in dumped
    assert "**********" in dumped


def test_unknown_modelferry_variables_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    env = {"MODELFERRY_TRANSFER__CONCURENCY": "3", "MODELFERRY_LOG_LEVEL": "debug", "OTHER": "x"}
    with caplog.at_level(logging.WARNING):
        unknown = warn_unknown_env(SyncSettings, environ=env)
    assert unknown == ["MODELFERRY_TRANSFER__CONCURENCY"]
    assert "MODELFERRY_TRANSFER__CONCURENCY" in caplog.text


def test_secrets_never_reach_log_output() -> None:
    register_secret("s3cr3t-value-123")
    stream = io.StringIO()
    setup_logging("info", "json", stream=stream)
    logging.getLogger("t").info("using key %s and token hf_abcdefghijklmnopqrstuvwxyz", "s3cr3t-value-123")
    try:
        raise RuntimeError("boom s3cr3t-value-123")
    except RuntimeError:
        logging.getLogger("t").exception("failed")
    out = stream.getvalue()
    assert "s3cr3t-value-123" not in out
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in out
    first = json.loads(out.splitlines()[0])
    assert first["level"] == "info" and "***" in first["message"]


def test_scrub_known_shapes() -> None:
    assert "abc" not in scrub("Authorization: Bearer abcdefgh").split("Bearer")[-1]
    assert scrub("aws_secret_access_key=AKIAXYZ123") == "aws_secret_access_key=***"
