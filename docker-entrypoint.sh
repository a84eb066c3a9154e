#!/bin/sh
# No arguments: migrate the configured database, then serve it (production).
# Arguments: run `eid <arguments>`, e.g. `serve --demo --fixtures /fixtures.yaml`.
set -e
if [ "$#" -eq 0 ]; then
  eid migrate
  exec eid serve --host 0.0.0.0 --port 8000
fi
exec eid "$@"
