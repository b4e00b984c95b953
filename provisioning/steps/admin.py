"""The MLflow admin account: its password checked before anything changes, and rotated.

MLflow reads MLFLOW_AUTH_ADMIN_PASSWORD only when it creates the admin user; a
password changed later (in the UI, as MLflow recommends, or by another operator)
makes the kit's own password stale. Bootstrap notices that before it changes
anything and says what to do, instead of stopping at the health gate with a 401.
"""

from __future__ import annotations

import json
import shlex

from provisioning import facts
from provisioning.layout import PATHS
from provisioning.play import Outcome, changed, unchanged
from provisioning.settings import Deployment, Secret
from provisioning.transport import Host, PreflightError

NOT_SERVING = ("", "000", "502", "503", "504")

#: Changes a user's own password through MLflow's API on the host (passwords: JSON on stdin).
USER_UPDATE_SCRIPT = """
import json, sys, requests, warnings
warnings.filterwarnings("ignore")
given = json.load(sys.stdin)
api = "https://127.0.0.1/api/2.0/mlflow/users"
user = given["username"]
response = requests.patch(f"{api}/update-password", verify=False, timeout=60,
    auth=(user, given["current"]),
    json={"username": user, "password": given["new"], "current_password": given["current"]})
if response.status_code != 200:
    sys.exit(f"update-password answered {response.status_code}: {response.text[:300]}")
check = requests.get(f"{api}/get", params={"username": user}, auth=(user, given["new"]),
    verify=False, timeout=60)
if check.status_code != 200:
    sys.exit(f"the new password is refused: users/get answered {check.status_code}")
print("password changed")
"""


def curl_login(username: str, password: str) -> str:
    """A curl config (read from stdin) with the credentials, so none is on a command line."""
    escaped = f"{username}:{password}".replace("\\", "\\\\").replace('"', '\\"')
    return f'user = "{escaped}"\n'


def check_password(host: Host, deployment: Deployment) -> Outcome[None]:
    """The admin password the kit was given opens the running server; a server that refuses
    it stops the play here, before any change, with what to do. No server yet: nothing to check."""
    code = host.read(
        facts.admin_login(deployment.admin_username),
        stdin=curl_login(deployment.admin_username, deployment.admin_password.reveal()),
    )
    if code in NOT_SERVING:
        return unchanged("no server answering yet")
    if code == "200":
        return unchanged(f"{deployment.admin_username}'s password accepted")
    raise PreflightError(
        f"[{host.name}] the admin password the kit was given (admin_password in the settings, "
        f"or the stack's output) no longer opens the server (MLflow "
        f"answered {code} for {deployment.admin_username}): it was changed on the server, in "
        "the UI or by `fab rotate-admin-password` elsewhere. Put the server's current password "
        "there, or set a new one: fab rotate-admin-password --current-password-file FILE "
        "--new-password-file FILE (with --stack or --settings as for bootstrap). Nothing was changed."
    )


def change_password(
    host: Host, deployment: Deployment, current: Secret, new: Secret
) -> Outcome[None]:
    """The admin's password changed through MLflow's own API, then proven."""
    given = {
        "username": deployment.admin_username,
        "current": current.reveal(),
        "new": new.reveal(),
    }
    result = host.run(
        f"{PATHS['current_env']}/bin/python -c {shlex.quote(USER_UPDATE_SCRIPT)}",
        sudo=False,
        check=False,
        stdin=json.dumps(given),
        timeout=120,
    )
    if result.exited != 0:
        raise host.error(
            "MLflow users/update-password", result.exited, result.stderr or result.stdout
        )
    return changed(f"{deployment.admin_username}'s password changed on the server")
