"""Secrets that never show themselves, and the one error type settings raise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REDACTED = "*****"


class Secret:
    """A string that never shows itself in ``repr``, ``str``, f-strings or logs.

    ``reveal()`` returns the value; only the template context calls it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __len__(self) -> int:
        return len(self._value)


class SettingsError(ValueError):
    """A setting has a value the kit does not accept.

    ``key`` is the settings-file key (or stack output name), ``value`` the offending
    value (a :class:`Secret` when the value is secret, so it stays hidden), and
    ``allowed`` says what would be accepted.
    """

    def __init__(self, key: str, value: Any, allowed: str, secret: bool = False):
        if secret and value is not MISSING and not isinstance(value, Secret):
            value = Secret(value if isinstance(value, str) else repr(value))
        self.key, self.value, self.allowed = key, value, allowed
        if value is MISSING:
            message = f"setting {key!r} is missing; required: {allowed}"
        else:
            message = f"setting {key!r} has value {_shown(value)}; allowed: {allowed}"
        super().__init__(message)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


#: SettingsError's value when a required setting is absent.
MISSING = _Missing()


def _shown(value: Any) -> str:
    if isinstance(value, Secret):
        return repr(REDACTED)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_shown(v)}" for k, v in value.items()) + "}"
    return repr(value)
