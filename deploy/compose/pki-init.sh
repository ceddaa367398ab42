#!/bin/sh
# deploy/compose.yaml's `pki` service: makes the federation CA once, then a certificate per
# service, and lays out one folder per service in the shared, read-only-mounted `pki` volume:
#   /var/lib/amble-pki/NAME/cert.pem, key.pem (0600), ca.pem, crl.pem
# The CA's own key stays in the `ca` volume, which only this service mounts. Safe to run again:
# existing certificates are kept, the CA certificate and CRL are copied afresh.
set -eu
CA=/var/lib/amble-ca/federation
OUT=/var/lib/amble-pki
FEDERATION=${AMBLE_FEDERATION:-compose.amble.test}

[ -e "$CA/ca.key" ] || amble pki init --dir "$CA" --federation "$FEDERATION"

# issue NAME ROLE [DNS]: DNS is the compose service name the others reach it by.
issue() {
  name=$1 role=$2 dns=${3:-}
  if [ ! -e "$OUT/$name/cert.pem" ]; then
    if [ -n "$dns" ]; then
      amble pki issue --dir "$CA" --name "$name" --role "$role" --dns "$dns"
    else
      amble pki issue --dir "$CA" --name "$name" --role "$role"
    fi
    install -d -m 0700 "$OUT/$name"
    install -m 0644 "$CA/certs/$name.pem" "$OUT/$name/cert.pem"
    install -m 0600 "$CA/certs/$name.key" "$OUT/$name/key.pem"
  fi
  install -m 0644 "$CA/ca.pem" "$CA/crl.pem" "$OUT/$name/"
}

issue coordinator coordinator coordinator
issue node-1 node node-1
issue node-2 node node-2
# A client certificate for the operator: `amble coordinator status`, `amble audit fetch`.
issue admin admin
echo "pki: certificates ready in $OUT"
