"""Test stack names, TTLs and expiry labels."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from provisioning.teststacks import naming
from stacks import contract

pytestmark = pytest.mark.unit
NOW = datetime(2025, 1, 31, 8, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4h", timedelta(hours=4)),
        ("90m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 1D 2H ", timedelta(days=1, hours=2)),
        ("7d", timedelta(days=7)),
        ("10m", timedelta(minutes=10)),
    ],
)
def test_ttl_accepts_durations(text, expected):
    assert naming.parse_ttl(text) == expected


@pytest.mark.parametrize("text", ["", "4", "h", "4 hours", "-1h", "1h-", "5m", "8d", "0h", "1.5h"])
def test_ttl_refuses_garbage_and_out_of_range(text):
    with pytest.raises(ValueError, match="TTL"):
        naming.parse_ttl(text)


def test_stack_name_says_owner_and_time_and_is_label_safe():
    name = naming.stack_name("Alice.Smith@Example", NOW)
    assert name == "test-alice-smith-example-202501310800"[: len(name)]
    assert name.startswith("test-alice-smith") and name.endswith("-202501310800")
    assert re.fullmatch(r"[a-z0-9_-]{1,63}", name)


def test_expiry_rounds_up_to_the_minute_and_uses_the_contract_format():
    expires = naming.expires_at(NOW, timedelta(hours=4))
    assert expires == "202501311201"
    assert naming.parse_expires(expires) == datetime(2025, 1, 31, 12, 1, tzinfo=UTC)
    assert datetime.strptime(expires, contract.EXPIRES_FORMAT)


@pytest.mark.parametrize("text", [None, "", "2025-01-31", "202513011200"])
def test_unreadable_expiry_is_none(text):
    assert naming.parse_expires(text) is None


def test_owner_prefers_the_ci_actor(monkeypatch):
    monkeypatch.setenv("GITHUB_ACTOR", "Dependabot[bot]")
    assert naming.owner() == "dependabot-bot"
