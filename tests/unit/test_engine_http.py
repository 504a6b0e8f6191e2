"""Pure parts of the ranged HTTP fetcher and of the Hub backend: headers, errors, credentials."""

from __future__ import annotations

import email.utils
from pathlib import Path

import httpx2
import pytest
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from pydantic import SecretStr

from modelferry.errors import (
    AccessDeniedError,
    NotFoundError,
    PermanentError,
    RetryableError,
    ThrottledError,
    UsageError,
)
from modelferry.settings import HFCredentials
from modelferry.storage.hf import resolve_endpoint, resolve_token, translate_hub_error
from modelferry.storage.http import RangedHTTPClient
from modelferry.storage.http_status import parse_content_range, parse_retry_after, same_origin, status_error


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    when = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(when, now=1_000_000) == pytest.approx(30.0)
    assert parse_retry_after(when, now=2_000_000) == 0.0


def test_content_range() -> None:
    assert parse_content_range("bytes 0-99/1000") == (0, 99, 1000)
    assert parse_content_range("bytes 5-9/*") == (5, 9, None)
    assert parse_content_range("items 0-1/2") is None
    assert parse_content_range(None) is None


def test_same_origin() -> None:
    assert same_origin("https://huggingface.co/a", "https://huggingface.co:443/b")
    assert not same_origin("https://huggingface.co/a", "https://cdn-lfs.hf.co/b")
    assert not same_origin("http://127.0.0.1:1/a", "http://127.0.0.1:2/a")
    assert not same_origin("http://h/a", "https://h/a")


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, ThrottledError),
        (503, ThrottledError),
        (500, RetryableError),
        (502, RetryableError),
        (404, NotFoundError),
        (401, AccessDeniedError),
        (403, AccessDeniedError),
        (416, PermanentError),
        (400, PermanentError),
    ],
)
def test_status_mapping(status: int, kind: type[Exception]) -> None:
    err = status_error(status, "hf://o/r/x", {"Retry-After": "3"})
    assert type(err) is kind
    assert "hf://o/r/x" in str(err)
    if kind is ThrottledError:
        assert isinstance(err, ThrottledError) and err.retry_after == 3.0


class FakeResponse:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers


def test_content_range_must_match_the_request() -> None:
    http = RangedHTTPClient(connect_timeout=1, stall_timeout=1)
    check = http._check_response
    assert check(FakeResponse(206, {"Content-Range": "bytes 10-19/100"}), 10, 10, "x") == 0  # type: ignore[arg-type]
    with pytest.raises(RetryableError, match="Content-Range"):
        check(FakeResponse(206, {"Content-Range": "bytes 0-9/100"}), 10, 10, "x")  # type: ignore[arg-type]
    with pytest.raises(RetryableError, match="Content-Range"):
        check(FakeResponse(206, {}), 10, 10, "x")  # type: ignore[arg-type]
    assert check(FakeResponse(200, {}), 10, 10, "x") == 10  # type: ignore[arg-type]  # Range ignored: skip ahead
    with pytest.raises(NotFoundError):
        check(FakeResponse(404, {}), 0, 10, "x")  # type: ignore[arg-type]


def _response(status: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status, headers=headers, request=httpx2.Request("GET", "http://hub/api/models/o/r"))


def test_translate_hub_errors() -> None:
    gated = translate_hub_error(GatedRepoError("gated", response=_response(401)), "o/r", None, has_token=False)
    assert isinstance(gated, AccessDeniedError) and "HF_TOKEN" in str(gated) and "licence" in str(gated)
    rev = translate_hub_error(RevisionNotFoundError("x", response=_response(404)), "o/r", "v9", has_token=False)
    assert isinstance(rev, NotFoundError) and "'v9'" in str(rev) and "o/r" in str(rev)
    missing = translate_hub_error(RepositoryNotFoundError("x", response=_response(404)), "o/r", None, has_token=False)
    assert isinstance(missing, NotFoundError) and "o/r" in str(missing) and "HF_TOKEN" in str(missing)
    denied = translate_hub_error(HfHubHTTPError("x", response=_response(403)), "o/r", None, has_token=True)
    assert isinstance(denied, AccessDeniedError)
    slow = translate_hub_error(
        HfHubHTTPError("x", response=_response(429, {"Retry-After": "4"})), "o/r", None, has_token=True
    )
    assert isinstance(slow, ThrottledError) and slow.retry_after == 4.0
    down = translate_hub_error(HfHubHTTPError("x", response=_response(502)), "o/r", None, has_token=True)
    assert type(down) is RetryableError
    offline = translate_hub_error(httpx2.ConnectError("refused"), "o/r", None, has_token=True)
    assert type(offline) is RetryableError
    odd = translate_hub_error(HfHubHTTPError("x", response=_response(400)), "o/r", None, has_token=True)
    assert type(odd) is PermanentError


def test_token_sources_in_order(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text(" from-file\n")
    env = {"HF_TOKEN": "from-env"}
    assert resolve_token(HFCredentials(token=SecretStr("flag"), token_file=str(file)), env) == "flag"
    assert resolve_token(HFCredentials(token_file=str(file)), env) == "from-file"
    assert resolve_token(HFCredentials(), env) == "from-env"
    assert resolve_token(HFCredentials(), {"HUGGING_FACE_HUB_TOKEN": "old"}) == "old"
    assert resolve_token(HFCredentials(), {}) is None
    with pytest.raises(UsageError, match="token file"):
        resolve_token(HFCredentials(token_file=str(tmp_path / "missing")), {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError, match="empty"):
        resolve_token(HFCredentials(token_file=str(tmp_path / "empty")), {})


def test_endpoint_sources_in_order() -> None:
    assert resolve_endpoint(HFCredentials(endpoint="http://mirror/"), {"HF_ENDPOINT": "http://env"}) == "http://mirror"
    assert resolve_endpoint(HFCredentials(), {"HF_ENDPOINT": "http://env/"}) == "http://env"
    assert resolve_endpoint(HFCredentials(), {}) == "https://huggingface.co"
