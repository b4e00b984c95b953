"""Fabric tasks for short-lived test stacks: create, tear down, reap (see provisioning/tasks.py).

Exit codes: 0 done and clean; 1 leftovers found or Pulumi failed (re-run to
continue); 2 refused or bad arguments, nothing was touched.
"""

from __future__ import annotations

import os

from invoke import task
from invoke.exceptions import Exit

from provisioning.pulumi_cli import PulumiError
from provisioning.teststacks import create as create_mod
from provisioning.teststacks import naming, reaper
from provisioning.teststacks.leftovers import report
from provisioning.teststacks.teardown import (
    Target,
    TeardownFailed,
    TeardownRefused,
    Timing,
)
from provisioning.teststacks.teardown import (
    teardown as run_teardown,
)

LEFTOVERS, REFUSED = 1, 2


def _timing() -> Timing:
    """Defaults, with overrides for CI (and the tests) from the environment."""
    timing = Timing()
    backoff = os.environ.get("MLFLOW_KIT_RETRY_BACKOFF")
    settle = os.environ.get("MLFLOW_KIT_SETTLE_SECONDS")
    if backoff is not None:
        timing.backoff = float(backoff)
    if settle is not None:
        timing.settle = float(settle)
        timing.poll = min(timing.poll, max(float(settle) / 4, 0.5))
    return timing


@task(
    iterable=["config"],
    help={
        "cloud": "gcp or aws",
        "ttl": "lifetime before the reaper may destroy it: 4h, 90m, 2d, 1h30m (10m to 7d)",
        "name": "stack name; default test-<owner>-<yyyymmddhhmm> (owner: CI actor or $USER)",
        "from-file": "stack file to copy plain settings from; default: the cloud's example",
        "config": "extra KEY=VALUE setting, repeatable (KEY without namespace: mlflow-server:KEY)",
        "skip-up": "create and configure the stack, but do not run pulumi up",
    },
)
def test_stack(c, cloud, ttl="4h", name=None, from_file=None, config=None, skip_up=False):
    """Create, select and deploy a short-lived test stack that expires after TTL.

    Names the stack test-<owner>-<yyyymmddhhmm> (or --name), copies the plain
    settings of stacks/Pulumi.<cloud>-test.yaml (or --from-file), applies each
    --config KEY=VALUE, and sets cloud, environment=test and expiresAt=now+TTL, so
    every resource is labelled/tagged with the stack and its expiry. Then runs
    `pulumi up --yes`. The last line printed is `stack: NAME`. If up fails the
    stack is kept for `fab teardown --stack NAME`.

    Example: fab test-stack --cloud gcp --ttl 2h --config gcp:project=my-ci-project
    """
    try:
        planned = create_mod.plan(
            cloud, ttl, now=naming.now_utc(), name=name, from_file=from_file, pairs=config
        )
    except create_mod.PlanError as error:
        raise Exit(f"test-stack: {error}", code=REFUSED) from error
    source = planned.source or "no stack file"
    print(f"settings from {source}; expires {planned.config['mlflow-server:expiresAt']} UTC")
    try:
        create_mod.create(planned, deploy=not skip_up)
    except PulumiError as error:
        if "already exists" in error.stderr:
            raise Exit(
                f"test-stack: stack {planned.name} already exists; pick another --name "
                f"or tear it down: fab teardown --stack {planned.name}",
                code=REFUSED,
            ) from error
        raise Exit(
            f"test-stack: {error}\nthe stack is kept; remove it with: "
            f"fab teardown --stack {planned.name}",
            code=LEFTOVERS,
        ) from error
    print(f"stack: {planned.name}")


@task(
    help={
        "stack": "the stack to destroy and remove",
        "allow-prod": "allow tearing down a stack whose environment is prod (or unset)",
        "cloud": "gcp or aws; needed only when the stack no longer exists",
        "region": "AWS region to check; default the stack's aws:region or $AWS_REGION",
        "project": "GCP project to check; default the stack's gcp:project or $GOOGLE_CLOUD_PROJECT",
    },
)
def teardown(c, stack, allow_prod=False, cloud=None, region=None, project=None):
    """Destroy a stack, remove it, and prove no labelled resource of it is left.

    Runs `pulumi destroy --yes` (transient failures retried with backoff) and
    `pulumi stack rm --yes`, then lists every resource still labelled/tagged
    mlflow-kit-stack=STACK with the cloud's own APIs. Exits 0 when clean, 1
    listing each leftover with a command that removes it, 2 when refused. A
    prod-class stack is refused without --allow-prod. Safe to re-run: it
    continues an interrupted or half-failed teardown; for a stack already
    removed it only checks (give --cloud). MLFLOW_KIT_RETRY_BACKOFF and
    MLFLOW_KIT_SETTLE_SECONDS tune the retry wait and how long listings may lag.

    Example: fab teardown --stack test-alice-202501311200
    """
    target = Target(cloud or "", region, project) if (cloud or region or project) else None
    try:
        leftovers = run_teardown(stack, allow_prod=allow_prod, target=target, timing=_timing())
    except TeardownRefused as error:
        raise Exit(f"teardown refused: {error}", code=REFUSED) from error
    except (TeardownFailed, PulumiError) as error:
        raise Exit(f"teardown failed: {error}", code=LEFTOVERS) from error
    if leftovers:
        print(f"NOT CLEAN: {len(leftovers)} resource(s) of stack {stack} remain:")
        print(report(leftovers))
        raise Exit(f"teardown: {len(leftovers)} leftover(s) of {stack}", code=LEFTOVERS)
    print(f"clean: no resource of stack {stack} remains")


def _orphan_finders(cloud, region, project):
    targets = []
    clouds = [cloud] if cloud else []
    if not cloud:
        if region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
            clouds.append("aws")
        if project or os.environ.get("GOOGLE_CLOUD_PROJECT"):
            clouds.append("gcp")
    for name in clouds:
        targets.append(Target(name, region, project).finder())
    return targets


@task(
    help={
        "dry-run": "only list what would be torn down",
        "cloud": "where to look for orphaned resources: gcp or aws (default: every cloud "
        "whose $AWS_REGION / $GOOGLE_CLOUD_PROJECT is set)",
        "region": "AWS region to search for orphans",
        "project": "GCP project to search for orphans",
    },
)
def reap(c, dry_run=False, cloud=None, region=None, project=None):
    """Tear down test stacks past their TTL, and delete expired orphaned test resources.

    A stack is reaped only if its config says environment=test and its
    expiresAt has passed; every other stack is listed as kept with the reason.
    Orphans are resources labelled mlflow-kit-env=test whose mlflow-kit-expires
    has passed and whose stack no longer exists. Exits 1 if anything could not
    be removed. Run it on a schedule (e.g. hourly in CI).

    Example: fab reap --dry-run --cloud aws --region eu-west-1
    """
    try:
        finders = _orphan_finders(cloud, region, project)
    except TeardownRefused as error:
        raise Exit(f"reap refused: {error}", code=REFUSED) from error
    now = naming.now_utc()
    planned = reaper.plan(now, finders)
    for stack, reason in planned.kept:
        print(f"keep   {stack}: {reason}")
    for expired in planned.expired:
        when = f"{expired.expires:%Y-%m-%d %H:%M} UTC"
        print(f"expired {expired.stack} ({expired.cloud or 'cloud unset'}, expired {when})")
    for _, item in planned.orphans:
        print(f"orphan {item.describe()} (stack {item.stack}, expired {item.expires})")
    if not finders:
        print("orphans not searched: give --cloud with --region/--project")
    if dry_run:
        print(
            f"dry run: {len(planned.expired)} stack(s) and {len(planned.orphans)} orphan(s) to reap"
        )
        return
    failures = []
    for expired in planned.expired:
        try:
            leftovers = run_teardown(expired.stack, timing=_timing())
        except (TeardownRefused, TeardownFailed, PulumiError) as error:
            failures.append(f"{expired.stack}: {error}")
            continue
        if leftovers:
            failures.append(f"{expired.stack}: leftovers\n{report(leftovers)}")
        else:
            print(f"reaped {expired.stack}: clean")
    for finder, item in planned.orphans:
        try:
            finder.remove(item)
            print(f"removed orphan {item.describe()}")
        except Exception as error:  # each orphan on its own: one failure must not stop the rest
            failures.append(
                f"orphan {item.describe()}: {error}\n  remove with: {item.remove_command}"
            )
    if failures:
        print("NOT CLEAN:")
        print("\n".join(failures))
        raise Exit(f"reap: {len(failures)} failure(s)", code=LEFTOVERS)
    print("reap: done")
