"""File convergence: make a path hold exactly the wanted content, mode and owner.

Each function reads the path's state first (a fact) and changes only what
differs; it returns whether it changed anything.
"""

from __future__ import annotations

import hashlib
import shlex

from provisioning import facts
from provisioning.transport import Host


def ensure_file(
    host: Host,
    path: str,
    content: str | bytes,
    *,
    mode: str,
    owner: str = "root",
    group: str = "root",
) -> bool:
    """Make ``path`` hold exactly ``content`` with ``mode``/``owner``; True if it changed."""
    data = content.encode() if isinstance(content, str) else content
    want = hashlib.sha256(data).hexdigest()
    state = host.read(facts.file_state(path))
    q = shlex.quote(path)
    if state.exists and state.sha256 == want:
        if (state.mode, state.owner, state.group) == (mode.zfill(4), owner, group):
            return False
        host.run(f"chown {owner}:{group} {q} && chmod {mode} {q}")
        return True
    # Upload into a directory only the login user can read, then install atomically
    # with the final mode, so a secret is never readable by others even for a moment.
    tmpdir = host.run("mktemp -d", sudo=False).stdout.strip()
    try:
        staged = f"{tmpdir}/upload"
        host.put(data, staged)
        host.run(
            f"install -D -m {mode} -o {owner} -g {group} {shlex.quote(staged)} {q}.kit-new"
            f" && mv -f {q}.kit-new {q}"
        )
    finally:
        host.run(f"rm -rf {shlex.quote(tmpdir)}", sudo=False, check=False)
    return True


def ensure_directory(host: Host, path: str, *, mode: str, owner: str, group: str) -> bool:
    state = host.read(facts.path_state(path))
    if state == facts.PathState(True, mode, owner, group):
        return False
    host.run(f"install -d -m {mode} -o {owner} -g {group} {shlex.quote(path)}")
    return True


def ensure_symlink(host: Host, link: str, target: str) -> bool:
    """Point ``link`` at ``target``, atomically (rename over the old link)."""
    if host.read(facts.symlink_target(link)) == target:
        return False
    host.run(f"ln -sfn {target} {link}.kit-new && mv -fT {link}.kit-new {link}")
    return True


def ensure_absent(host: Host, path: str) -> bool:
    if not host.read(facts.exists(path)):
        return False
    host.run(f"rm -f {shlex.quote(path)}")
    return True
