"""Replays recorded GCP API responses in place of google-auth's AuthorizedSession."""

from __future__ import annotations

import json
from pathlib import Path

import requests

RECORDED = Path(__file__).resolve().parent / "recorded"


class Response:
    def __init__(self, status: int, body: dict, url: str):
        self.status_code, self._body, self.url = status, body, url

    def json(self) -> dict:
        return self._body

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise requests.HTTPError(f"{self.status_code} for {self.url}", response=self)


class RecordedSession:
    """Answers GETs from a cassette (matching URL and the params it records); logs DELETEs."""

    def __init__(self, cassette: str):
        data = json.loads((RECORDED / cassette).read_text())
        self.project = data["project"]
        self.interactions = data["interactions"]
        self.requests: list[tuple[str, str, dict]] = []
        self.deleted: list[str] = []

    def get(self, url, params=None, timeout=None):
        params = params or {}
        self.requests.append(("GET", url, dict(params)))
        for item in self.interactions:
            if item["url"] == url and all(params.get(k) == v for k, v in item["params"].items()):
                if "pageToken" in params and "pageToken" not in item["params"]:
                    continue
                return Response(item["status"], item["body"], url)
        raise AssertionError(f"no recorded response for GET {url} {params}")

    def delete(self, url, params=None, timeout=None):
        self.requests.append(("DELETE", url, dict(params or {})))
        self.deleted.append(url)
        return Response(200, {"kind": "compute#operation", "status": "RUNNING"}, url)
