#!/usr/bin/env bash
# Makes sure python3 with venv/ensurepip is there (Debian 12 ships venv
# support in a separate package), so tests/lib.sh's python_env can build the
# pinned virtualenv. Idempotent; installs only what is missing.
source "$(dirname "$0")/lib.sh"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install python3 python3-venv
