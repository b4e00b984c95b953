"""The AWS stack: one ComponentResource per concern, wired by deploy.py."""
