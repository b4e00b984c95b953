"""The local test cloud: a fresh Debian 12 host plus PostgreSQL, S3 and GCS stand-ins.

It plays the cloud for the end-to-end tests and ``make demo``: the host is a
debootstrap-built Debian 12 root filesystem booted by ``systemd-nspawn`` in its
own network namespace; PostgreSQL (TLS, scram), moto (S3) and
gcp-storage-emulator (GCS) run on the machine and listen only on the address
the guest reaches them at.
"""
