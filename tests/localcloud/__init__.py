"""The local test cloud: fresh Debian 12 hosts plus PostgreSQL, S3 and GCS stand-ins.

It plays the cloud for the end-to-end tests and ``make demo``: a host is a
debootstrap-built Debian 12 root filesystem booted by ``systemd-nspawn`` in its
own network namespace, either plain (ready at once) or cloud-like (booting like a
fresh VM of a stack: cloud-init, a busy apt, a late sshd, machine-type limits;
see ``cloudlike.py``); PostgreSQL (TLS, scram), moto (S3) and
gcp-storage-emulator (GCS) run on the machine and listen only on the address the
guest reaches them at, with Pebble (Let's Encrypt's test server, ``acme.py``).
"""
