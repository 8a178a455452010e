#!/usr/bin/env bash
# Rust unit and property tests plus the #[pg_test]s, through pgrx's harness.
# initdb refuses root, so the harness's cluster runs as `postgres`.
source "$(dirname "$0")/lib.sh"
mkdir -p "$SCRATCH"; chmod 777 "$SCRATCH"
rm -rf "$SCRATCH/pgrx"
cd "$ROOT"
cargo pgrx test pg15 --runas postgres --pgdata "$SCRATCH/pgrx"
