"""Replays recorded GCP API responses in place of google-auth's AuthorizedSession.

Strict where the real API is: a searchAllResources call with a query parameter the
Cloud Asset API v1 does not define is refused, as Google answers 400 for an unknown
parameter ("Method: searchAllResources", cloud.google.com/asset-inventory/docs/reference/
rest/v1/TopLevel/searchAllResources: query, assetTypes[], pageSize (at most 500),
pageToken, orderBy, readMask). What the real API does that this does not: the word
matching of ``query`` (the recorded answers carry it), eventual consistency, and
permission errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import requests

RECORDED = Path(__file__).resolve().parent / "recorded"
SEARCH_PARAMETERS = frozenset(
    {"query", "assetTypes", "pageSize", "pageToken", "orderBy", "readMask"}
)


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
        if url.endswith(":searchAllResources"):
            unknown = set(params) - SEARCH_PARAMETERS
            if unknown:
                return Response(400, {"error": f"Invalid JSON payload: {sorted(unknown)}"}, url)
            if int(params.get("pageSize", 0)) > 500:
                return Response(400, {"error": "page_size must be at most 500"}, url)
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
