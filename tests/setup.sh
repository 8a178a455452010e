#!/usr/bin/env bash
# One-time, idempotent machine set-up for building and testing apollo_jobs on
# Debian 12 as root: PostgreSQL 15 + headers, libclang for bindgen, sudo (to
# run the server as `postgres`), cargo-pgrx 0.18.1, and `cargo pgrx init`
# pointed at the distribution's PostgreSQL 15 (pgrx never downloads one).
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGRX_VERSION=0.18.1

need_pkgs=()
for p in postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang sudo make; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# Debian's postgresql package starts a cluster on port 5432; we never use it.
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
  echo "setup: installing cargo-pgrx $PGRX_VERSION (takes several minutes)"
  cargo install --quiet cargo-pgrx --version "$PGRX_VERSION" --locked
fi

if ! grep -qs "^pg15 *= *\"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  echo "setup: cargo pgrx init --pg15 $PG_CONFIG"
  cargo pgrx init --pg15 "$PG_CONFIG"
fi
echo "setup: ok"
