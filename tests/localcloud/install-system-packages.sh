#!/bin/bash
# Debian packages the kit's tests and the local demo need. Idempotent: installs only what is missing.
# pebble: Let's Encrypt's test ACME server and its DNS (pebble-challtestsrv), for the local cloud.
set -euo pipefail
packages=(
  python3 python3-venv make curl ca-certificates openssl openssh-client procps
  systemd debootstrap systemd-container iproute2 nftables
  postgresql-15 nginx-light pebble
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
# The kit starts its own throwaway PostgreSQL and nginx; keep apt from creating and
# starting Debian's default ones.
$SUDO mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/mlflow-kit.conf >/dev/null
printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
$SUDO chmod 755 /usr/sbin/policy-rc.d
trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
echo "installing: ${missing[*]}"
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
