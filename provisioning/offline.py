"""Offline installs: what a host without internet needs, fetched by the operator's machine.

With ``offline_install: true`` the host never asks an index or a download server:

- the Miniforge installer is fetched here from ``miniforge_url`` (a ``file://`` URL is a
  file on this machine), checked against ``miniforge_sha256`` and uploaded;
- the lock's wheels for the host's own Python and platform are downloaded here into a
  wheelhouse (``pip download --require-hashes --only-binary=:all:``, the lock's markers
  resolved for that Python first, since pip would resolve them for the machine running
  it), uploaded, and installed on the host with ``--no-index --find-links``;
- the environment is a venv of the installer's own Python (no conda channel is reachable
  and ``conda clean`` empties the package cache an offline ``conda create`` would need),
  so ``python_version`` must be that Python's. conda-forge's Python keeps ``ensurepip``
  so that ``python -m venv`` gives a venv with pip (conda-forge/python-feedstock#178);
  like conda-forge's pip since 24.1.2, it brings no setuptools (pip-feedstock#121), so the
  venv holds what a conda-built environment holds: the lock, pip, the kit's wheel.

Both are cached under ``offline_cache_dir`` by what they are (the installer's sha256; the
lock's sha256 and the target's Python, CPU and glibc), so a second host of the same kind
downloads nothing; a wheelhouse is complete or absent (built aside, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement

from provisioning.facts import Fact, parse_sha256sums
from provisioning.lock import Lock

#: The lowest glibc a manylinux wheel may name (PEP 600: manylinux_2_5 is manylinux1).
OLDEST_GLIBC_MINOR = 5
#: PEP 600's aliases for the legacy manylinux tags pip also matches.
LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
LEGACY_ARCHES = {
    "manylinux2014": ("x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x"),
    "manylinux2010": ("x86_64", "i686"),
    "manylinux1": ("x86_64", "i686"),
}
#: sha256sum's format: one ``<sha256>  <name>`` line per wheel.
MANIFEST = "SHA256SUMS"
DOWNLOAD_TIMEOUT_S = 3600

#: Prints what packaging.markers.default_environment() gives (PEP 508's marker variables)
#: for the Python that runs it, and its glibc. Standard library only: the host's
#: Python has nothing else yet.
_TARGET_SCRIPT = """
import json, os, platform, sys
i = sys.implementation
v = i.version
iv = "%d.%d.%d" % (v.major, v.minor, v.micro)
if v.releaselevel != "final":
    iv += v.releaselevel[0] + str(v.serial)
print(json.dumps({"markers": {
    "implementation_name": i.name, "implementation_version": iv, "os_name": os.name,
    "platform_machine": platform.machine(), "platform_release": platform.release(),
    "platform_system": platform.system(), "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "platform_python_implementation": platform.python_implementation(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform},
    "glibc": os.confstr("CS_GNU_LIBC_VERSION") or ""}))
"""


class OfflineError(Exception):
    """What the operator's machine could not fetch or build; the message says which and why."""


@dataclass(frozen=True)
class Target:
    """A host's Python as pip sees it: PEP 508's marker values and the host's glibc."""

    markers: dict[str, str]
    glibc: tuple[int, int]

    @property
    def python_version(self) -> str:
        return self.markers["python_version"]

    @property
    def machine(self) -> str:
        return self.markers["platform_machine"]

    @property
    def key(self) -> str:
        """What a wheelhouse is built for: ``cp312-x86_64-glibc2.36``."""
        impl = "cp" if self.markers["implementation_name"] == "cpython" else "py"
        nodot = self.python_version.replace(".", "")
        return f"{impl}{nodot}-{self.machine}-glibc{self.glibc[0]}.{self.glibc[1]}"

    def platforms(self) -> list[str]:
        """The wheel platform tags the host takes, most specific first (pip prefers the
        earlier): manylinux_2_N down to 2_5 for its glibc, with PEP 600's legacy aliases."""
        major, newest = self.glibc
        if major != 2:
            raise OfflineError(f"glibc {major}.{newest}: manylinux wheels name glibc 2.x only")
        tags = []
        for minor in range(newest, OLDEST_GLIBC_MINOR - 1, -1):
            tags.append(f"manylinux_2_{minor}_{self.machine}")
            legacy = LEGACY_MANYLINUX.get(minor)
            if legacy and self.machine in LEGACY_ARCHES[legacy]:
                tags.append(f"{legacy}_{self.machine}")
        return tags


#: What the offline-cache task accepts for a host it has not seen.
PYTHON = re.compile(r"^3\.(\d{1,2})(\.\d{1,2})?$")
MACHINES = ("x86_64", "aarch64", "ppc64le", "s390x")
GLIBC = re.compile(r"^2\.(\d{1,2})$")


def linux_target(python: str, machine: str, glibc: str) -> Target:
    """A CPython on glibc Linux described by hand (``3.12``, ``x86_64``, ``2.36``), for a
    cache made before the host exists; a bootstrap reads the host's own instead."""
    if not PYTHON.fullmatch(python):
        raise OfflineError(f"python {python!r}: allowed: a CPython 3 version like 3.12 or 3.12.10")
    if machine not in MACHINES:
        raise OfflineError(f"machine {machine!r}: allowed: {', '.join(MACHINES)} (uname -m)")
    if not GLIBC.fullmatch(glibc):
        raise OfflineError(
            f"glibc {glibc!r}: allowed: 2.N, e.g. 2.36 (Debian 12; getconf GNU_LIBC_VERSION)"
        )
    full = python if python.count(".") == 2 else f"{python}.0"
    markers = {
        "implementation_name": "cpython", "implementation_version": full, "os_name": "posix",
        "platform_machine": machine, "platform_release": "", "platform_system": "Linux",
        "platform_version": "", "python_full_version": full,
        "platform_python_implementation": "CPython",
        "python_version": ".".join(full.split(".")[:2]), "sys_platform": "linux",
    }  # fmt: skip
    return Target(markers, (2, int(glibc.split(".")[1])))


def parse_target(text: str) -> Target | None:
    """The target script's output; None when the host has no such Python (yet)."""
    if not text.strip():
        return None
    data = json.loads(text)
    glibc = data["glibc"].split()  # "glibc 2.36"
    if len(glibc) != 2 or glibc[0] != "glibc":
        raise OfflineError(f"not a glibc system ({data['glibc']!r}): manylinux wheels need glibc")
    major, minor = (int(p) for p in glibc[1].split(".")[:2])
    return Target(dict(data["markers"]), (major, minor))


def target(python: str) -> Fact[Target | None]:
    """What the Python at ``python`` on the host is, for choosing its wheels."""
    q = shlex.quote(python)
    return Fact(
        f"if [ -x {q} ]; then {q} -c {shlex.quote(_TARGET_SCRIPT)}; fi",
        parse_target,
        sudo=False,
    )


def requirements(lock: Lock, target: Target) -> list[str]:
    """The lock's requirements that apply to ``target``, markers dropped, hashes kept:
    ``name==version --hash=sha256:...`` (what pip download then fetches as they are)."""
    lines = []
    for logical in lock.text.replace("\\\n", " ").splitlines():
        line = logical.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        spec, _, hashes = line.partition(" --hash=")
        try:
            requirement = Requirement(spec)
        except InvalidRequirement as exc:
            raise OfflineError(f"{lock.name}: {spec!r}: {exc}") from None
        if requirement.marker is not None and not requirement.marker.evaluate(target.markers):
            continue
        pin = spec.split(";", 1)[0].strip()
        lines.append(f"{pin} --hash={hashes}")
    return lines


def cache_dir(configured: str | None) -> Path:
    """``offline_cache_dir``, or ``$XDG_CACHE_HOME/mlflow-kit/offline`` (``~/.cache/...``)."""
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlflow-kit" / "offline"


@dataclass(frozen=True)
class Wheelhouse:
    """A complete wheelhouse on this machine: its directory and each wheel's sha256."""

    path: Path
    wheels: dict[str, str]

    @property
    def size(self) -> int:
        return sum((self.path / name).stat().st_size for name in self.wheels)


def download_command(target: Target, requirements_file: Path, dest: Path) -> list[str]:
    """pip download for ``target``'s wheels only, every file checked against the lock."""
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--only-binary=:all:", "--require-hashes",
        "--python-version", target.python_version, "--dest", str(dest),
    ]  # fmt: skip
    if target.markers["implementation_name"] == "cpython":
        command += ["--implementation", "cp"]
    for platform in target.platforms():
        command += ["--platform", platform]
    return [*command, "-r", str(requirements_file)]


def wheelhouse(
    lock: Lock, target: Target, cache: Path, note: Callable[[str], None] = lambda _m: None
) -> Wheelhouse:
    """The lock's wheels for ``target``, downloaded once into ``cache``."""
    path = (
        cache / "wheelhouse" / f"{lock.name.removesuffix('.txt')}.{lock.sha256[:16]}-{target.key}"
    )
    if (path / MANIFEST).is_file():
        return _read(path)
    wanted = requirements(lock, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{path.name}.partial-", dir=path.parent))
    try:
        listing = partial / "requirements.txt"
        listing.write_text("\n".join(wanted) + "\n")
        command = download_command(target, listing, partial)
        note(f"downloading {len(wanted)} wheels for {target.key} into {path}")
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-12:])
            raise OfflineError(
                f"`{shlex.join(command)}` failed (exit {result.returncode}) on this machine, "
                f"which downloads the host's wheels for offline_install:\n{tail}"
            )
        listing.unlink()
        wheels = sorted(p.name for p in partial.iterdir())
        if len(wheels) != len(wanted):
            raise OfflineError(
                f"pip download gave {len(wheels)} files for {len(wanted)} requirements "
                f"of {lock.name} ({target.key})"
            )
        sums = {name: _sha256(partial / name) for name in wheels}
        (partial / MANIFEST).write_text("".join(f"{s}  {n}\n" for n, s in sums.items()))
        partial.rename(path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return _read(path)


def _read(path: Path) -> Wheelhouse:
    return Wheelhouse(path, parse_sha256sums((path / MANIFEST).read_text()))


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def installer(url: str, sha256: str, cache: Path) -> Path:
    """The Miniforge installer ``url`` names, fetched once by this machine, checked."""
    path = cache / "miniforge" / f"{sha256}.sh"
    if path.is_file() and _sha256(path) == sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=f"{sha256}.partial-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            parts = urlsplit(url)
            try:
                if parts.scheme == "file":
                    with open(unquote(parts.path), "rb") as source:
                        shutil.copyfileobj(source, out)
                else:
                    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310
                        shutil.copyfileobj(response, out, 1 << 20)
            except OSError as exc:
                raise OfflineError(
                    f"miniforge_url {url}: this machine could not fetch it ({exc}); "
                    "offline_install fetches the installer here, not on the host"
                ) from None
        got = _sha256(Path(staged))
        if got != sha256:
            raise OfflineError(
                f"miniforge_url {url}: sha256 {got}, but miniforge_sha256 is {sha256}"
            )
        os.replace(staged, path)
    finally:
        Path(staged).unlink(missing_ok=True)
    return path
