"""Pure parts of the control plane: the Secret index, watch backoff, lease decisions, lease settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from modelferry.controller.config.controller import ControllerSettings
from modelferry.controller.kube.lease import held_by_other, next_spec
from modelferry.controller.kube.watch import Backoff
from modelferry.controller.reconcile.secretindex import SecretIndex


def test_secret_index_maps_names_to_readers_and_back() -> None:
    index = SecretIndex()
    a, b = ("Secret", "ns", "model-source"), ("ModelSync", "ns", "granite")
    assert index.set(a, "ns", ["demo-models"]) == ([("ns", "demo-models")], [])
    assert index.set(b, "ns", ["demo-models", "hf-token"]) == ([("ns", "hf-token")], [])
    assert sorted(index.readers("ns", "demo-models")) == sorted([a, b])
    assert index.readers("other", "demo-models") == []
    assert index.set(b, "ns", ["demo-models", "hf-token"]) == ([], [])  # unchanged: no work
    assert index.set(b, "ns", ["demo-models"]) == ([], [("ns", "hf-token")])  # no reader left
    assert index.drop(a) == []  # b still reads demo-models
    assert index.drop(b) == [("ns", "demo-models")]
    assert len(index) == 0 and index.readers("ns", "demo-models") == []


def test_secret_index_ignores_empty_names() -> None:
    index = SecretIndex()
    index.set(("ModelSync", "ns", "m"), "ns", ["", "x"])
    assert index.keys() == [("ns", "x")]


def test_backoff_doubles_with_jitter_up_to_the_cap_and_honours_retry_after() -> None:
    backoff = Backoff(base=1.0, maximum=8.0, jitter=1.0)
    for attempt, low in enumerate([1.0, 2.0, 4.0, 8.0, 8.0]):
        delays = [backoff.delay(attempt) for _ in range(50)]
        assert all(low <= d <= min(8.0, 2 * low) for d in delays)
    assert backoff.delay(0, retry_after=20.0) == 20.0
    assert Backoff(base=1.0, maximum=8.0, jitter=0.0).delay(100) == 8.0


def test_lease_held_by_other_uses_our_observation_time_not_their_clock() -> None:
    spec = {"holderIdentity": "other", "leaseDurationSeconds": 15, "renewTime": "1999-01-01T00:00:00.000000Z"}
    # Their renewTime is ancient (clock skew), but we saw the record change 5 s ago: still theirs.
    assert held_by_other(spec, "me", observed_at=100.0, now=105.0, duration=15)
    assert not held_by_other(spec, "me", observed_at=100.0, now=115.0, duration=15)
    assert not held_by_other({**spec, "holderIdentity": "me"}, "me", 100.0, 101.0, 15)
    assert not held_by_other({**spec, "holderIdentity": None}, "me", 100.0, 101.0, 15)  # released


def test_next_spec_renewal_keeps_acquire_time_and_takeover_counts_a_transition() -> None:
    wall = datetime(2026, 1, 1, tzinfo=UTC)
    mine = next_spec({}, "me", wall, 15)
    assert mine["holderIdentity"] == "me" and mine["leaseTransitions"] == 0
    later = next_spec(mine, "me", wall.replace(minute=1), 15)
    assert later["acquireTime"] == mine["acquireTime"] and later["renewTime"] != mine["renewTime"]
    taken = next_spec(later, "you", wall.replace(minute=2), 15)
    assert taken["leaseTransitions"] == 1 and taken["acquireTime"] == taken["renewTime"]


@pytest.mark.parametrize(
    ("lease", "deadline", "retry"),
    [(10.0, 10.0, 2.0), (15.0, 2.0, 2.0)],
    ids=["deadline-not-below-lease", "deadline-not-above-retry"],
)
def test_lease_settings_are_checked_like_client_go(lease: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValidationError):
        ControllerSettings(lease_duration_seconds=lease, renew_deadline_seconds=deadline, retry_period_seconds=retry)


def test_lease_defaults_are_client_go_defaults() -> None:
    settings = ControllerSettings()
    assert (settings.lease_duration_seconds, settings.renew_deadline_seconds, settings.retry_period_seconds) == (
        15.0,
        10.0,
        2.0,
    )
    for name in ("renew_deadline_seconds", "retry_period_seconds", "watch_backoff_seconds", "secret_page_size"):
        assert ControllerSettings.model_fields[name].description
