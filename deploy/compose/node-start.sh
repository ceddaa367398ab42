#!/bin/sh
# deploy/compose.yaml's node services: initialise the data directory on first start (the key
# file goes to its own volume), then serve. `exec` replaces the shell, so amble is PID 1 and gets
# the SIGTERM of `docker compose stop` and the SIGHUP of `docker compose kill -s HUP` (reload).
set -eu
DATA=/var/lib/amble/node
KEY=/var/lib/amble-key/node.key
if [ ! -d "$DATA/archive" ]; then
  amble node init --data-dir "$DATA" --key-file "$KEY"
fi
exec amble node serve --config /etc/amble/node.toml
