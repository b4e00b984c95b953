"""Fabric tasks (see provisioning/tasks.py)."""
