"""Stand-ins for what these machines cannot download (see conda_installer.py)."""
