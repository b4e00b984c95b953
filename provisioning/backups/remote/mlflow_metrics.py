"""The server's Prometheus metrics in one place (on the VM, mlflow-metrics.service).

Installed as /opt/mlflow/bin/mlflow-metrics. Each ``mlflow-server@PORT`` instance keeps
its own metrics (``--expose-prometheus``: requests, latencies, MLflow's own); one
scrape of nginx's ``/metrics`` would reach one instance at random. This service
answers ``GET /metrics`` on loopback with every instance's metrics, each sample
labelled ``instance_port``, plus the kit's counts:

- ``mlflow_kit_instance_up{instance_port}``: whether the instance answered;
- ``mlflow_kit_experiments{lifecycle_stage}``, ``mlflow_kit_runs{lifecycle_stage}``,
  ``mlflow_kit_registered_models``, ``mlflow_kit_model_versions``,
  ``mlflow_kit_database_bytes`` (refreshed every minute);
- ``mlflow_kit_artifact_objects``, ``mlflow_kit_artifact_bytes`` (the bucket prefix,
  backups excluded; refreshed every 15 minutes: listing a bucket is not free);
- ``mlflow_kit_gc_last_run_timestamp_seconds``, ``mlflow_kit_gc_last_success`` and
  ``mlflow_kit_gc_last_removed_runs`` from the last gc run.

The instances are the ones nginx's upstream file lists. Their /metrics needs a login:
the admin's credentials come from the EnvironmentFile.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import json
import os
import re
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kit_storage

GC_STATE = "/var/lib/mlflow/gc-last.json"
DB_EVERY_S = 60
BUCKET_EVERY_S = 900
FETCH_TIMEOUT_S = 5
DB_QUERIES = {
    "experiments": "SELECT lifecycle_stage, count(*) FROM experiments GROUP BY 1",
    "runs": "SELECT lifecycle_stage, count(*) FROM runs GROUP BY 1",
    "registered_models": "SELECT '', count(*) FROM registered_models",
    "model_versions": "SELECT '', count(*) FROM model_versions",
    "database_bytes": "SELECT '', pg_database_size(current_database())",
}


def instance_ports(upstream_text: str) -> list[int]:
    """The loopback ports nginx's upstream file sends to (``down`` ones included)."""
    return sorted({int(p) for p in re.findall(r"server 127\.0\.0\.1:(\d+)", upstream_text)})


def merge(texts: dict[int, str | None]):
    """Metric families of every instance, each sample labelled with its instance's port."""
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    up = Metric("mlflow_kit_instance_up", "Whether the instance answered its /metrics", "gauge")
    for port, text in sorted(texts.items()):
        up.add_sample(
            "mlflow_kit_instance_up", {"instance_port": str(port)}, 0 if text is None else 1
        )
        for family in text_string_to_metric_families(text or ""):
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            for sample in family.samples:
                labels = {**sample.labels, "instance_port": str(port)}
                merged.samples.append(sample._replace(labels=labels))
    return [up, *families.values()]


class Counts:
    """The kit's counts, refreshed in the background so a scrape never waits for them."""

    def __init__(self):
        self.db: dict[str, dict[str, float]] = {}
        self.bucket: dict[str, float] = {}
        self.lock = threading.Lock()

    def refresh_db(self, uri: str) -> None:
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                found = {
                    name: {str(k): float(v) for k, v in conn.execute(sqlalchemy.text(sql))}
                    for name, sql in DB_QUERIES.items()
                }
        finally:
            engine.dispose()
        with self.lock:
            self.db = found

    def refresh_bucket(self) -> None:
        entries = kit_storage.open_store().artifacts()
        with self.lock:
            self.bucket = {"objects": len(entries), "bytes": sum(e.size for e in entries)}

    def families(self):
        from prometheus_client.metrics_core import GaugeMetricFamily

        with self.lock:
            db, bucket = dict(self.db), dict(self.bucket)
        out = []
        for name in ("experiments", "runs"):
            if name in db:
                g = GaugeMetricFamily(f"mlflow_kit_{name}", f"{name} by lifecycle stage",
                                      labels=["lifecycle_stage"])  # fmt: skip
                stages = {"active": 0.0, "deleted": 0.0, **db[name]}
                for stage, value in sorted(stages.items()):
                    g.add_metric([stage], value)
                out.append(g)
        for name in ("registered_models", "model_versions", "database_bytes"):
            if name in db:
                out.append(GaugeMetricFamily(f"mlflow_kit_{name}", name.replace("_", " "),
                                             value=sum(db[name].values())))  # fmt: skip
        for name in ("objects", "bytes"):
            if name in bucket:
                out.append(GaugeMetricFamily(f"mlflow_kit_artifact_{name}",
                                             f"artifact {name} under the bucket prefix",
                                             value=bucket[name]))  # fmt: skip
        out += gc_families()
        return out


def gc_families(path: str = GC_STATE):
    from prometheus_client.metrics_core import GaugeMetricFamily

    try:
        with open(path) as handle:
            state = json.load(handle)
        finished = calendar.timegm(time.strptime(state["finished"], "%Y-%m-%dT%H:%M:%SZ"))
    except (OSError, ValueError, KeyError):
        return []
    return [
        GaugeMetricFamily("mlflow_kit_gc_last_run_timestamp_seconds", "when gc last finished",
                          value=finished),
        GaugeMetricFamily("mlflow_kit_gc_last_success", "whether the last gc run succeeded",
                          value=1 if state.get("result") == "success" else 0),
        GaugeMetricFamily("mlflow_kit_gc_last_removed_runs", "runs the last gc run removed",
                          value=state.get("runs", 0)),
    ]  # fmt: skip


def fetch(port: int, auth: str) -> str | None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": auth}
    )
    try:
        # An http://127.0.0.1 URL built above, never a caller's.
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310
            return response.read().decode()
    except OSError:
        return None


def exposition(upstream: str, counts: Counts) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    user = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    password = kit_storage.admin_password()
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    with open(upstream) as handle:
        ports = instance_ports(handle.read())
    families = merge({port: fetch(port, auth) for port in ports}) + counts.families()

    class Snapshot:
        def collect(self):
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot())
    return generate_latest(registry)


def refresher(counts: Counts, uri: str) -> None:
    last_bucket = 0.0
    while True:
        try:
            counts.refresh_db(uri)
        except Exception as error:  # noqa: BLE001 - kept running; the last counts stay
            print(f"mlflow-metrics: database counts: {type(error).__name__}", file=sys.stderr)
        if time.monotonic() - last_bucket >= BUCKET_EVERY_S or not last_bucket:
            try:
                counts.refresh_bucket()
            except Exception as error:  # noqa: BLE001
                print(f"mlflow-metrics: bucket counts: {type(error).__name__}: {error}",
                      file=sys.stderr)  # fmt: skip
            last_bucket = time.monotonic()
        time.sleep(DB_EVERY_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlflow-metrics")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="nginx's upstream file")
    args = parser.parse_args(argv)
    counts = Counts()
    uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    threading.Thread(target=refresher, args=(counts, uri), daemon=True).start()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = exposition(args.upstream, counts)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):  # scrapes every few seconds: no access log
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
