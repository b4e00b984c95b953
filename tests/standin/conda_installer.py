"""A stand-in for the Miniforge installer, because conda channels cannot be reached here.

``build_installer(path)`` writes ``not-conda-standin-installer.sh``: like
Miniforge's installer it takes ``-b -p PREFIX``, refuses a PREFIX that exists, and
leaves a base environment there: ``PREFIX/bin/python`` (and ``python3``), ``pip``
and ``conda``, with ``PREFIX/bin/python -m venv DIR`` giving a venv with pip, as
conda-forge's Python ships ensurepip. The base environment is a venv of the guest's
own ``python3`` (Debian's, with python3-venv: ``tests/localcloud/image.py``); nothing
is downloaded, as nothing is by the real installer.
That ``conda`` is NOT conda: it understands exactly the commands the kit issues
(``conda env create --quiet --prefix P --file F``, ``conda clean --all --yes`` and
``conda --version``) and
builds the environment from the same environment.yml with ``python3 -m venv``
and pip, mapping conda-forge package names to their PyPI names. Everything
else in the bootstrap is the production path.

What real conda does that this stand-in does not (each a way a test here could
pass where conda would fail):
- ``python=X.Y.Z``: conda installs exactly that Python; the stand-in has only the
  host's ``python3`` and accepts it when X.Y match (a model environment asking for
  another patch release gets the host's).
- channels, solving and conda's own package names (beyond ``PIP_NAMES``) are not
  checked: conda dependencies are installed with pip.
- solve time and memory, conda's own lock files, conda's package cache.
- the conda packages are installed by pip into a venv before the pip section, as conda
  installs them before it; the pip section itself runs as conda runs it.

What the real installer's base environment is that this one is not:
- its Python: Miniforge 25.3.1-0's base is conda-forge's Python 3.12 (its installers
  default to 3.12), under PREFIX; here it is the guest's Debian Python 3.11, and
  ``PREFIX/bin/python`` is a venv's link to ``/usr/bin/python3``. A venv made with
  ``PREFIX/bin/python -m venv DIR`` runs ``/usr/bin/python3.11`` (its pyvenv.cfg
  ``home`` is ``/usr/bin``, not ``PREFIX/bin``): wheels are chosen for cp311, not
  cp312, and nothing in such a venv depends on PREFIX staying in place.
- what such a venv starts with: Debian 3.11's ensurepip gives pip 23.0.1 and
  setuptools; Python 3.12's venv installs pip alone (What's New in Python 3.12:
  ensurepip no longer bundles setuptools, venv no longer installs it), and a newer
  pip. A lock that forgets setuptools, or code that imports ``pkg_resources``,
  passes here and fails on Miniforge.
- its conda, mamba, openssl and the rest of conda-forge's base packages, its
  ``PREFIX/envs`` and ``PREFIX/pkgs``, ``conda init``, the installer's own checks
  (the embedded payload's md5, the architecture), and ``-u``/``-f``/``-s``/``-t``.
- its time: the real one unpacks and links conda-forge's packages; this one writes a
  venv (about 3 s on a local host).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

INSTALLER_NAME = "not-conda-standin-installer.sh"

FAKE_CONDA = r'''#!/usr/bin/python3
"""Stand-in for conda (tests only): builds environments with venv and pip."""
import json, os, re, subprocess, sys, tempfile

PIP_NAMES = {"psycopg2": "psycopg2-binary"}
SKIP = {"pip"}


def parse(path):
    """(conda packages, pip packages) of an environment.yml's dependencies."""
    conda, pip, section, pip_indent = [], [], None, None
    for raw in open(path):
        line = re.split(r"(?:^|\s)#", raw, maxsplit=1)[0].rstrip()  # YAML: " #" or a line's "#"
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            section, pip_indent = line.strip().rstrip(":"), None
            continue
        item = line.strip()
        if section != "dependencies" or not item.startswith("- "):
            continue
        item = item[2:].strip()
        if item.startswith('"'):
            item = json.loads(item)  # a double-quoted YAML scalar (JSON's escapes)
        if item == "pip:":
            pip_indent = indent
        elif pip_indent is not None and indent > pip_indent:
            pip.append(item)
        else:
            pip_indent = None
            conda.append(item)
    return conda, pip


def main(argv):
    if argv[:1] == ["--version"]:
        print("conda 0.0 (not conda: a venv-and-pip stand-in for tests)")
        return 0
    if argv[:2] == ["clean", "--all"]:
        return 0  # no package cache: pip's stays under the root's home, outside the envs
    if argv[:2] != ["env", "create"]:
        print(f"stand-in conda: unsupported command {argv}", file=sys.stderr)
        return 2
    args = dict(zip(argv[2::1], argv[3::1]))
    prefix, envfile = args.get("--prefix"), args.get("--file")
    if not prefix or not envfile:
        print("stand-in conda: env create needs --prefix and --file", file=sys.stderr)
        return 2
    conda, pip = parse(envfile)
    want_python = next((c.split("=", 1)[1] for c in conda if c.startswith("python=")), None)
    have = "%d.%d" % sys.version_info[:2]
    if want_python and want_python.split(".")[:2] != have.split("."):
        print(f"stand-in conda: python={want_python} requested, only {have} available", file=sys.stderr)
        return 1
    packages = [PIP_NAMES.get(c, c) for c in conda if not c.startswith("python=") and c not in SKIP]
    subprocess.run([sys.executable, "-m", "venv", prefix], check=True)
    pip_cmd = [f"{prefix}/bin/pip", "install", "--quiet", "--disable-pip-version-check"]
    # pip's own error is the stand-in's error, as conda reports pip's failure.
    if packages and subprocess.run([*pip_cmd, *packages]).returncode:
        return 1
    if not pip:
        return 0
    # As conda (conda/env/installers/pip.py): the pip section's lines, joined by newlines,
    # into a requirements file beside the environment file, then pip install -U -r it
    # from that directory; so its lines may be options (--require-hashes, -r FILE).
    workdir = os.path.dirname(os.path.abspath(envfile))
    fd, requirements = tempfile.mkstemp(prefix="condaenv.", suffix=".requirements.txt", dir=workdir)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(pip))
        return subprocess.run([*pip_cmd, "-U", "-r", requirements, "--exists-action=b"],
                              cwd=workdir).returncode
    finally:
        os.remove(requirements)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''

INSTALLER = """#!/bin/bash
# not-conda-standin-installer.sh: a TEST STAND-IN for the Miniforge installer.
# Leaves a base environment at PREFIX (a venv of this machine's python3, with pip) and
# PREFIX/bin/conda, which builds environments with venv and pip.
set -euo pipefail
prefix=""
while [ $# -gt 0 ]; do
  case "$1" in
    -b) shift ;;
    -p) prefix="$2"; shift 2 ;;
    *) echo "stand-in installer: unsupported option $1" >&2; exit 2 ;;
  esac
done
[ -n "$prefix" ] || { echo "stand-in installer: -p PREFIX is required" >&2; exit 2; }
# As Miniforge's installer (conda/constructor, header.sh), which needs -u to reuse a PREFIX.
if [ -e "$prefix" ]; then
  echo "ERROR: File or directory already exists: '$prefix'" >&2
  echo "If you want to update an existing installation, use the -u option." >&2
  exit 1
fi
python3 -m venv "$prefix"
cat > "$prefix/bin/conda" <<'CONDA_STANDIN'
@FAKE_CONDA@
CONDA_STANDIN
chmod 755 "$prefix/bin/conda"
echo "installed the conda stand-in and a base environment ($(python3 --version)) into $prefix"
"""


def build_installer(directory: Path) -> tuple[Path, str]:
    """Write the installer into ``directory``; return its path and sha256."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / INSTALLER_NAME
    path.write_text(INSTALLER.replace("@FAKE_CONDA@", FAKE_CONDA.strip("\n")))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()
