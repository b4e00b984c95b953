"""Test stack names, TTLs and expiry times (all UTC)."""

from __future__ import annotations

import getpass
import os
import re
from datetime import UTC, datetime, timedelta

from stacks import contract

PREFIX = "test-"
MIN_TTL = timedelta(minutes=10)
MAX_TTL = timedelta(days=7)
_TTL_PART = re.compile(r"(\d+)([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
# Variables CI systems set to the person who started the run, most specific first.
_OWNER_VARIABLES = ("MLFLOW_KIT_OWNER", "GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILD_REQUESTEDFOR")


def parse_ttl(text: str) -> timedelta:
    """``4h``, ``90m``, ``2d`` or combinations such as ``1h30m``, from 10 minutes to 7 days."""
    compact = text.strip().lower().replace(" ", "")
    parts = _TTL_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"TTL {text!r} is not a duration such as 4h, 90m, 2d or 1h30m")
    ttl = sum((timedelta(**{_UNITS[unit]: int(number)}) for number, unit in parts), timedelta())
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise ValueError(f"TTL {text!r} is outside the allowed range of 10m to 7d")
    return ttl


def owner() -> str:
    """Who a new test stack belongs to: the CI actor, else the local user, label-safe."""
    for variable in _OWNER_VARIABLES:
        if os.environ.get(variable):
            return _safe(os.environ[variable])
    try:
        return _safe(getpass.getuser())
    except (KeyError, OSError):
        return "unknown"


def _safe(text: str) -> str:
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return cleaned[:20].rstrip("-") or "unknown"


def stack_name(who: str, now: datetime) -> str:
    """``test-<owner>-<yyyymmddhhmm>``: sorts by time and says whose it is."""
    return f"{PREFIX}{_safe(who)}-{now.astimezone(UTC).strftime(contract.EXPIRES_FORMAT)}"


def expires_at(now: datetime, ttl: timedelta) -> str:
    """``now + ttl`` as the label-safe ``YYYYMMDDhhmm``, rounded up to the next minute."""
    moment = now.astimezone(UTC) + ttl
    if moment.second or moment.microsecond:
        moment = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return moment.strftime(contract.EXPIRES_FORMAT)


def parse_expires(text: str | None) -> datetime | None:
    """An ``expiresAt`` / expiry label as a UTC time; None when absent or malformed."""
    if not text:
        return None
    try:
        return datetime.strptime(text, contract.EXPIRES_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def now_utc() -> datetime:
    return datetime.now(UTC)
