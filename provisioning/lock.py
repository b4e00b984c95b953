"""The server environment's pip packages, locked: every version and sha256 pinned.

One lock per MLflow version (and per mlflow-oidc-auth version for ``auth: oidc``) lives
in ``provisioning/locks/``. environment.yml installs it with ``--require-hashes``
(templates/environment.yml.j2), and names it by its sha256, so every host with the same
settings installs the same bytes, and an edited lock is a new environment.

A lock is made by the maintainer command, never by hand::

    python -m provisioning.lock 3.17.2                  # mlflow-3.17.2.txt
    python -m provisioning.lock 3.17.2 --oidc 10.1.3    # mlflow-3.17.2-oidc-10.1.3.txt
    python -m provisioning.lock --all                   # every committed lock again

It resolves with uv (``uv pip compile --universal``: one file for every Linux machine and
CPU the kit may land on, Python 3.11 and later) against the package index pip is
configured with, and writes no index address into the file.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

LOCKS_DIR = Path(__file__).with_name("locks")
#: The oldest Python a lock resolves for (``--python-version``); newer ones are covered.
LOCK_PYTHON = "3.11"
#: What the server environment installs besides MLflow. psycopg2 comes as the PyPI wheel
#: (libpq inside) so that conda's part is Python and pip alone; both storage clients, so
#: one lock serves S3 and GCS hosts; httptools and uvloop because the server unit asks
#: uvicorn for them by name; prometheus_flask_exporter for --expose-prometheus.
PACKAGES = (
    "psycopg2-binary",
    "prometheus-flask-exporter",
    "httptools",
    "uvloop",
    "boto3",
    "google-cloud-storage",
)
_NAME = re.compile(r"^mlflow-(?P<mlflow>\d+\.\d+\.\d+)(?:-oidc-(?P<oidc>\d+\.\d+\.\d+))?\.txt$")
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?==\S+( ;.*)? \\$")


class LockError(Exception):
    """A lock could not be made or read; the message says which and why."""


@dataclass(frozen=True)
class Lock:
    """One committed lock file."""

    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def host_name(self) -> str:
        """Its file name on a host: the sha256 in it, so another lock is another file."""
        return f"{self.name.removesuffix('.txt')}.{self.sha256}.txt"


def requirements(mlflow_version: str, oidc_plugin_version: str | None = None) -> list[str]:
    """The top-level requirements a lock resolves."""
    top = [f"mlflow[auth]=={mlflow_version}", *PACKAGES]
    if oidc_plugin_version:
        top.append(f"mlflow-oidc-auth=={oidc_plugin_version}")
    return top


def file_name(mlflow_version: str, oidc_plugin_version: str | None = None) -> str:
    oidc = f"-oidc-{oidc_plugin_version}" if oidc_plugin_version else ""
    return f"mlflow-{mlflow_version}{oidc}.txt"


def command(mlflow_version: str, oidc_plugin_version: str | None = None) -> str:
    """The maintainer command that makes (or remakes) this lock."""
    oidc = f" --oidc {oidc_plugin_version}" if oidc_plugin_version else ""
    return f"python -m provisioning.lock {mlflow_version}{oidc}"


def committed() -> list[tuple[str, str | None]]:
    """(MLflow version, plugin version or None) of every committed lock, by file name."""
    matches = (_NAME.match(path.name) for path in LOCKS_DIR.glob("mlflow-*.txt"))
    return sorted(
        ((m["mlflow"], m["oidc"]) for m in matches if m), key=lambda t: (t[0], t[1] or "")
    )


def find(mlflow_version: str, oidc_plugin_version: str | None = None) -> Lock | None:
    path = LOCKS_DIR / file_name(mlflow_version, oidc_plugin_version)
    return Lock(path.name, path.read_text()) if path.is_file() else None


def available(oidc_plugin_version: str | None = None) -> list[str]:
    """MLflow versions with a committed lock (for that plugin version, or without one)."""
    found = [mlflow for mlflow, oidc in committed() if oidc == oidc_plugin_version]
    return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")))


def check(text: str) -> None:
    """Refuse a lock pip's --require-hashes would not take as a complete pin: each
    requirement ``name==version`` followed by at least one sha256, no index options."""
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#") or line.startswith("    --hash="):
            continue
        if line.startswith("-") or "://" in line:
            raise LockError(f"line {number}: {line!r}: no options or addresses in a lock")
        if not _PINNED.match(line):
            raise LockError(f"line {number}: {line!r}: not pinned as name==version")
        if not lines[number:] or not lines[number].startswith("    --hash=sha256:"):
            raise LockError(f"line {number}: {line!r}: no sha256 follows")


def generate(
    mlflow_version: str, oidc_plugin_version: str | None = None, index_args: tuple = ()
) -> str:
    """The lock's text, resolved now; ``index_args`` are uv's (tests: a local index)."""
    top = requirements(mlflow_version, oidc_plugin_version)
    return compile_lock(top, command(mlflow_version, oidc_plugin_version), index_args)


def compile_lock(top: list[str], made_by: str, index_args: tuple = ()) -> str:
    """``top`` and everything it needs, pinned with every file's sha256, checked."""
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(uv).exists():
        raise LockError("uv is not installed: pip install uv (the test extra has it)")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "requirements.in")
        source.write_text("\n".join(top) + "\n")
        result = subprocess.run(
            [uv, "pip", "compile", "--quiet", "--universal", "--python-version", LOCK_PYTHON,
             "--generate-hashes", "--no-header", *index_args, str(source)],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise LockError(f"cannot resolve {' '.join(top)}:\n{tail}")
    header = (
        f"# The MLflow server environment's pip packages, locked. Made by `{made_by}`;\n"
        "# do not edit: run the command again. Installed with --require-hashes.\n"
        f"# Python >= {LOCK_PYTHON}, any Linux CPU. Requirements: {', '.join(top)}\n"
    )
    text = header + result.stdout
    check(text)
    return text


def write(mlflow_version: str, oidc_plugin_version: str | None = None) -> Path:
    path = LOCKS_DIR / file_name(mlflow_version, oidc_plugin_version)
    path.write_text(generate(mlflow_version, oidc_plugin_version))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m provisioning.lock", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("mlflow_version", nargs="?", help="e.g. 3.17.2")
    parser.add_argument("--oidc", metavar="VERSION", help="with mlflow-oidc-auth VERSION")
    parser.add_argument("--all", action="store_true", help="every committed lock again")
    args = parser.parse_args(argv)
    if args.all == bool(args.mlflow_version):
        parser.error("give an MLflow version or --all")
    targets = committed() if args.all else [(args.mlflow_version, args.oidc)]
    for mlflow_version, oidc in targets:
        try:
            path = write(mlflow_version, oidc)
        except LockError as exc:
            print(f"lock for MLflow {mlflow_version}: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
