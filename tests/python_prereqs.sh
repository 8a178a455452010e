#!/usr/bin/env bash
# Makes sure python3 with venv/ensurepip is there (Debian 12 ships venv
# support in a separate package), so tests/lib.sh's python_env can build the
# pinned virtualenv. Idempotent; installs only what is missing.
set -euo pipefail
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "python_prereqs: installing python3 python3-venv"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
fi
