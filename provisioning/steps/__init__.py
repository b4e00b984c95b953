"""The steps plays are made of, one module per concern.

Every step is ``step(host, *args) -> Outcome``: it reads facts first, changes
only what differs and returns what later steps need (see provisioning.play).
"""
