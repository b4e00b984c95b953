"""Backups of the MLflow server: what a backup is, and the managed databases' own backups.

- ``record``: :class:`BackupRecord`, what a backup is to the operator (and the exact
  command that restores it), and how ``fab backup`` picks the database's method;
- ``rds`` / ``cloudsql``: a managed database's snapshot or backup run and its restore,
  called from the operator's machine with the operator's credentials (the VM's
  identity may not snapshot its database);
- ``remote/``: the programs that run on the VM (the dump, the artifact copies, the
  manifest, gc and the metrics endpoint).

The steps that tie them to a host are in :mod:`provisioning.steps.backup`.
"""
