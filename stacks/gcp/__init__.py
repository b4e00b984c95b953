"""The GCP stack: settings, one ComponentResource per concern, and their wiring."""
