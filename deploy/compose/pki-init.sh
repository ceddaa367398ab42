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
# Each member organisation's own CA: the local root of its node (apps, admins, auditors).
for org in node-1 node-2; do
  [ -e "$CA/../org-$org/ca.key" ] ||
    amble pki init --dir "$CA/../org-$org" --federation "$FEDERATION" --organisation "org-$org"
done

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

# org_issue ORG NAME ROLE: a local principal of ORG's node, from ORG's own CA, in
# /var/lib/amble-pki/ORG-NAME/; the node's folder gets ORG's CA as org-ca.pem/org-crl.pem.
org_issue() {
  org=$1 name=$2 role=$3
  oca="$CA/../org-$org"
  if [ ! -e "$OUT/$org-$name/cert.pem" ]; then
    amble pki issue --dir "$oca" --name "$name" --role "$role"
    install -d -m 0700 "$OUT/$org-$name"
    install -m 0644 "$oca/certs/$name.pem" "$OUT/$org-$name/cert.pem"
    install -m 0600 "$oca/certs/$name.key" "$OUT/$org-$name/key.pem"
  fi
  install -m 0644 "$CA/ca.pem" "$CA/crl.pem" "$OUT/$org-$name/"
  install -m 0644 "$oca/ca.pem" "$OUT/$org/org-ca.pem"
  install -m 0644 "$oca/crl.pem" "$OUT/$org/org-crl.pem"
}

issue coordinator coordinator coordinator
issue node-1 node node-1
issue node-2 node node-2
# A client certificate for the federation operator: `amble coordinator status`, and
# `amble audit fetch` of the coordinator's log.
issue admin admin
# Each organisation's admin, for its own node (`amble audit fetch --node https://node-1:7443`).
org_issue node-1 admin admin
org_issue node-2 admin admin
echo "pki: certificates ready in $OUT"
