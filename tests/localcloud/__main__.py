"""``python -m tests.localcloud up|down|status``: the local cloud for ``make demo``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tests.localcloud.cloud import RUNS_ROOT, LocalCloud

DEMO_DIR = RUNS_ROOT / "demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.localcloud", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--run-dir", type=Path, default=DEMO_DIR)
    parser.add_argument("--settings-out", type=Path, help="write bootstrap settings (s3) here")
    args = parser.parse_args(argv)
    if args.command == "up":
        if (args.run_dir / "state.json").exists():
            cloud = LocalCloud.load(args.run_dir)
            if cloud.hosts and all(h.running() for h in cloud.hosts):
                print(f"local cloud already up ({args.run_dir})")
                _print(cloud, args.settings_out)
                return 0
            cloud.down()
        cloud = LocalCloud.up(tied=False, run_dir=args.run_dir)
        cloud.new_host()
        _print(cloud, args.settings_out)
        return 0
    if not (args.run_dir / "state.json").exists():
        print(f"no local cloud at {args.run_dir}")
        return 0
    cloud = LocalCloud.load(args.run_dir)
    if args.command == "down":
        cloud.down()
        print(f"local cloud at {args.run_dir} stopped and removed")
        return 0
    _print(cloud, None)
    return 0


def _print(cloud: LocalCloud, settings_out: Path | None) -> None:
    host = cloud.hosts[0]
    print(f"host:      {host.user}@{host.address} (running: {host.running()})")
    print(f"ssh:       {' '.join(host.ssh_argv())}")
    print(f"postgres:  {cloud.postgres.address}:{cloud.postgres.port} (TLS, scram)")
    print(f"s3:        {cloud.s3.endpoint}  bucket mlflow-artifacts")
    print(f"gcs:       {cloud.gcs.endpoint}  bucket mlflow-artifacts")
    if cloud.pebble:
        print(f"acme:      {cloud.acme_directory_url}  (CA: {cloud.acme_ca_cert_file})")
    if settings_out:
        settings_out.parent.mkdir(parents=True, exist_ok=True)
        settings_out.write_text(json.dumps(cloud.deployment_settings(host, "s3"), indent=2))
        settings_out.chmod(0o600)
        print(f"settings:  {settings_out}")


if __name__ == "__main__":
    sys.exit(main())
