#!/usr/bin/env bash
# One-time, idempotent machine set-up for building and testing apollo_jobs on
# Debian 12 as root: PostgreSQL 15 + headers, libclang for bindgen, sudo (to
# run the server as `postgres`), cargo-pgrx 0.18.1, and `cargo pgrx init`
# pointed at the distribution's PostgreSQL 15 (pgrx never downloads one).
source "$(dirname "$0")/lib.sh"
PGRX_VERSION=0.18.1

# The one prerequisite it cannot install: Rust (a fresh Debian has none).
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: apollo_jobs is built with Rust, and this machine has no cargo." >&2
  echo "  Install Rust with rustup (https://rustup.rs), then run this again." >&2
  exit 1
fi
apt_install postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang sudo make
# Debian's postgresql package starts a cluster on port 5432; we never use it.
if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
  echo "setup: installing cargo-pgrx $PGRX_VERSION (takes several minutes)"
  cargo install --quiet cargo-pgrx --version "$PGRX_VERSION" --locked
fi

if ! grep -qs "^pg15 *= *\"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  echo "setup: cargo pgrx init --pg15 $PG_CONFIG"
  cargo pgrx init --pg15 "$PG_CONFIG"
fi
echo "setup: ok"
