#!/usr/bin/env bash
# Rust unit and property tests plus the #[pg_test]s, through pgrx's harness,
# against a private copy of the system's PostgreSQL 15 (lib.sh's
# pgrx_private_tree: the harness installs its test build there, never where
# a server of the machine loads it). initdb refuses root, so the harness's
# cluster runs as `postgres`.
source "$(dirname "$0")/lib.sh"
pgrx_private_tree
rm -rf "$SCRATCH/pgrx"
cd "$ROOT"
cargo pgrx test pg15 --runas postgres --pgdata "$SCRATCH/pgrx"
