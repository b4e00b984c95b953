"""Fabric entry point: the tasks live in provisioning/ (run ``fab --list``)."""

from provisioning.tasks import collection

ns = collection()
