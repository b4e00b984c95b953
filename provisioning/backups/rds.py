"""An RDS instance's own snapshots: take one, and restore the instance from one (boto3).

Run from the operator's machine with the operator's AWS credentials. RDS restores a
snapshot into a *new* instance; so that the server's backend URI (whose host is the
instance's endpoint, named after its identifier) stays right, the restore then
swaps identifiers: the current instance is renamed ``<id>-before-<suffix>`` and kept
(delete it once the restore is checked), the restored one takes ``<id>``.

API: create_db_snapshot, the db_snapshot_available waiter,
restore_db_instance_from_db_snapshot, the db_instance_available waiter,
modify_db_instance(NewDBInstanceIdentifier=..., ApplyImmediately=True)
(docs.aws.amazon.com/AmazonRDS/latest/APIReference). The unit tests run it against moto.
"""

from __future__ import annotations

import time
from typing import Any

#: RDS identifiers are at most 63 characters.
MAX_ID = 63
RENAME_TIMEOUT_S = 1800


def client(region: str):
    import boto3

    return boto3.client("rds", region_name=region)


def snapshot_name(instance: str, backup_id: str) -> str:
    """``<instance>-kit-<backup id>`` in RDS's alphabet (letters, digits, hyphens)."""
    suffix = "-kit-" + backup_id.lower().replace("t", "-").replace("z", "")
    return (instance[: MAX_ID - len(suffix)] + suffix).strip("-")


def take(rds, instance: str, backup_id: str, *, delay: float = 30) -> dict[str, Any]:
    """A manual snapshot of ``instance``, waited for; what the manifest records of it."""
    name = snapshot_name(instance, backup_id)
    rds.create_db_snapshot(
        DBSnapshotIdentifier=name,
        DBInstanceIdentifier=instance,
        Tags=[{"Key": "mlflow-kit-backup", "Value": backup_id}],
    )
    rds.get_waiter("db_snapshot_available").wait(
        DBSnapshotIdentifier=name, WaiterConfig={"Delay": delay, "MaxAttempts": 240}
    )
    found = rds.describe_db_snapshots(DBSnapshotIdentifier=name)["DBSnapshots"][0]
    return {
        "method": "rds-snapshot",
        "snapshot": name,
        "instance": instance,
        "region": rds.meta.region_name,
        "engine_version": found.get("EngineVersion", ""),
    }


def restore(rds, instance: str, snapshot: str, suffix: str, *, delay: float = 30) -> dict[str, str]:
    """Restore ``instance`` from ``snapshot`` with the current instance's network and
    parameters, then swap identifiers; returns the names of both."""
    current = rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]
    restored = (instance[: MAX_ID - len(suffix) - 9] + "-restore-" + suffix).strip("-")
    previous = (instance[: MAX_ID - len(suffix) - 8] + "-before-" + suffix).strip("-")
    options: dict[str, Any] = {
        "DBInstanceIdentifier": restored,
        "DBSnapshotIdentifier": snapshot,
        "DBInstanceClass": current["DBInstanceClass"],
        "MultiAZ": current.get("MultiAZ", False),
        "PubliclyAccessible": False,
        "VpcSecurityGroupIds": [
            g["VpcSecurityGroupId"] for g in current.get("VpcSecurityGroups", [])
        ],
        "DeletionProtection": current.get("DeletionProtection", False),
        "CopyTagsToSnapshot": True,
        "Tags": current.get("TagList", []),
    }
    if current.get("DBSubnetGroup"):
        options["DBSubnetGroupName"] = current["DBSubnetGroup"]["DBSubnetGroupName"]
    groups = current.get("DBParameterGroups", [])
    if groups:
        options["DBParameterGroupName"] = groups[0]["DBParameterGroupName"]
    rds.restore_db_instance_from_db_snapshot(**options)
    rds.get_waiter("db_instance_available").wait(
        DBInstanceIdentifier=restored, WaiterConfig={"Delay": delay, "MaxAttempts": 240}
    )
    rename(rds, instance, previous, delay=delay)
    rename(rds, restored, instance, delay=delay)
    return {"instance": instance, "previous": previous}


def rename(rds, old: str, new: str, *, delay: float = 30) -> None:
    rds.modify_db_instance(
        DBInstanceIdentifier=old, NewDBInstanceIdentifier=new, ApplyImmediately=True
    )
    deadline = time.monotonic() + RENAME_TIMEOUT_S
    while True:
        try:
            found = rds.describe_db_instances(DBInstanceIdentifier=new)["DBInstances"][0]
            if found["DBInstanceStatus"] == "available":
                return
        except rds.exceptions.DBInstanceNotFoundFault:
            pass  # the rename has not happened yet
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"RDS instance {old} not available as {new} after {RENAME_TIMEOUT_S}s"
            )
        time.sleep(delay)
