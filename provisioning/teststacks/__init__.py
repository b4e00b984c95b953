"""Short-lived test stacks: create with a TTL, tear down, prove nothing is left.

``naming`` names stacks and parses TTLs, ``create`` assembles a test stack's
config, ``teardown`` destroys and verifies, ``reaper`` finds expired ones, and
``aws`` / ``gcp`` find (and for orphans remove) labelled resources with each
cloud's own APIs.
"""
