#!/usr/bin/env bash
# The extension in a throwaway cluster: set-up, build, install, then the API's
# create/poll flow in SQL, showing the 202/409 behaviour and the 404 cases.
source "$(dirname "$0")/lib.sh"
bash "$ROOT/tests/setup.sh"
echo "demo: building and installing apollo_jobs (release)"
install_extension
cluster_start demo "$PORT_DEMO"
trap 'cluster_stop demo' EXIT
psql_q -d postgres -e -f "$ROOT/tests/demo.sql"
