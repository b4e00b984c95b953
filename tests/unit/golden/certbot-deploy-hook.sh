#!/bin/sh
# Managed by fab bootstrap. certbot runs this after it renews a certificate
# (/etc/letsencrypt/renewal-hooks/deploy/mlflow-nginx-reload), so nginx serves the new one.
set -eu
case " ${RENEWED_DOMAINS:-} " in
  *" mlflow.example.com "*) systemctl reload nginx ;;
esac
