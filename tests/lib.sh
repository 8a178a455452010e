# shellcheck shell=bash
# Shared helpers for the test, demo and benchmark scripts. Source it.
#
# Scratch clusters run as the `postgres` OS user (initdb refuses root), trust
# auth, a unix socket in the cluster's own directory and, for JDBC clients,
# 127.0.0.1 on the given port. Nothing listens beyond loopback.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGBIN=$("$PG_CONFIG" --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
# shellcheck disable=SC2034  # used by the scripts that source this file
PGXS_TEST=$(dirname "$("$PG_CONFIG" --pgxs 2>/dev/null || echo /usr/lib/postgresql/15/lib/pgxs/src/makefiles/pgxs.mk)")/../test
SCRATCH=${APOLLO_JOBS_SCRATCH:-/tmp/apollo_jobs}
export PATH="$HOME/.cargo/bin:$PATH"

# Ports of the scratch clusters, every one the scripts use (127.0.0.1 and a
# unix socket in the cluster's directory). Stages run one after another and
# each stops its clusters on exit, so stages may share a port (standby,
# differential, the clients' replica, environment, listing, poolers, failover,
# pg_upgrade and packages reuse the ports of other stages); within one stage,
# and for anything meant to run beside the suite (bench, on 5498 alone),
# ports must differ.
# shellcheck disable=SC2034  # used by the scripts that source this file
{
  PORT_UPGRADE=5490          # upgrade.sh
  PORT_DEMO=5491             # demo.sh
  PORT_PG_REGRESS=5492       # pg_regress/run.sh
  PORT_ISOLATION=5493        # isolation/run.sh
  PORT_DUMP_RESTORE=5494     # dump_restore.sh
  PORT_STRESS=5495           # stress/run.sh
  PORT_CRASH=5496            # crash/run.sh
  PORT_CLIENTS=5497          # clients/run.sh
  PORT_BENCH=5498            # bench/bench.sh, bench/profile.sh (BENCH_PORT overrides)
  PORT_STANDBY_PRIMARY=5494  # standby/run.sh: the primary
  PORT_STANDBY_REPLICA=5495  # standby/run.sh: the hot standby streaming from it
  PORT_ENVIRONMENT=5496      # environment/run.sh
  PORT_LISTING=5490          # listing.sh
  PORT_DIFFERENTIAL=5495     # differential/run.sh (reuses stress's)
  PORT_POOLER_SERVER=5491    # poolers/run.sh: the server behind pgbouncer
  PORT_POOLER=5492           # poolers/run.sh: pgbouncer (transaction pooling)
  PORT_CLIENTS_REPLICA=5496  # clients/run.sh: hot standby of the clients' server
  PORT_FAILOVER_MONITOR=5490 # failover/run.sh: pg_auto_failover monitor
  PORT_FAILOVER_NODE1=5491   # failover/run.sh: data node 1 (first primary)
  PORT_FAILOVER_NODE2=5492   # failover/run.sh: data node 2 (first secondary)
  PORT_PG_UPGRADE_OLD=5490   # versions.sh: pg_upgrade's old cluster
  PORT_PG_UPGRADE_NEW=5491   # versions.sh: pg_upgrade's new cluster
  PORT_PACKAGES=5493         # packages.sh: the system server after apt-get install ./*.deb
  # versions.sh runs pg_regress/run.sh and isolation/run.sh per major, on
  # PORT_PG_REGRESS and PORT_ISOLATION (and dump_restore.sh, upgrade.sh on
  # theirs); `cargo pgrx test` (pgrx stage, versions) takes an ephemeral port.
}
# APOLLO_JOBS_PORT_OFFSET=N shifts every port above by N, for a second
# checkout's tests running beside this one's (default 0: the table as is).
if [ "${APOLLO_JOBS_PORT_OFFSET:-0}" != 0 ]; then
  for _v in ${!PORT_*}; do printf -v "$_v" '%s' $(( ${!_v} + APOLLO_JOBS_PORT_OFFSET )); done
  unset _v
fi

as_pg() { sudo -u postgres -- "$@"; }

# Builds (release unless PROFILE=dev) and installs the extension into
# $PG_CONFIG's server, built for that server's major version (Cargo feature
# pgN). The files are built into a package directory first and then moved
# into place (rename, a new inode): a server running meanwhile keeps the
# library it mapped, where an in-place overwrite would crash it.
install_extension() {
  local major pkg="$SCRATCH/package"
  major=$("$PG_CONFIG" --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
  local flags=(--pg-config "$PG_CONFIG" --no-default-features --features "pg$major")
  [ "${PROFILE:-release}" = release ] || flags+=(--debug)
  rm -rf "$pkg"; mkdir -p "$pkg"
  (cd "$ROOT" && cargo pgrx package "${flags[@]}" --out-dir "$pkg" >/dev/null)
  local f dest
  while IFS= read -r f; do
    dest="/${f#"$pkg"/}"
    mkdir -p "$(dirname "$dest")"
    cp "$f" "$dest.apollo_jobs_new" && mv -f "$dest.apollo_jobs_new" "$dest"
  done < <(find "$pkg" -type f)
}

# cluster_start NAME PORT [postgres -c options...]: a fresh cluster in $SCRATCH/NAME.
# Exports PGHOST/PGPORT/PGUSER so psql and clients reach it.
cluster_start() {
  local name=$1 port=$2; shift 2
  local dir="$SCRATCH/$name"
  cluster_stop "$name"
  mkdir -p "$SCRATCH"; chmod 777 "$SCRATCH"
  rm -rf "$dir"; mkdir -p "$dir"; chown postgres: "$dir"
  as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1
  local opts="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir"
  opts+=" -c fsync=on -c max_connections=60 -c shared_buffers=256MB -c log_min_messages=warning"
  for o in "$@"; do opts+=" -c $o"; done
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w -t 60 start >/dev/null
  export PGHOST=$dir PGPORT=$port PGUSER=postgres
}

# cluster_restart NAME [VAR=VALUE...]: restarts the cluster in $SCRATCH/NAME
# with its options (postmaster.opts) and VAR=VALUE added to the postmaster's
# environment (sudo resets the caller's, so pass what the server should see).
cluster_restart() {
  local dir="$SCRATCH/$1"; shift
  as_pg env "$@" "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 restart >/dev/null
}

cluster_stop() {
  local dir="$SCRATCH/$1"
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  # A server whose directory was removed under it cannot be stopped by pg_ctl.
  pkill -KILL -f -- "postgres -D $dir/data( |\$)" 2>/dev/null || true
}

psql_q() { "$PGBIN/psql" -X -v ON_ERROR_STOP=1 -q "$@"; }

# A virtualenv with tests/requirements.txt (pinned), created on first use.
# Puts its python first on PATH.
python_env() {
  local venv="$SCRATCH/venv"
  local stamp="$venv/.requirements.sha"
  local want; want=$(sha256sum "$ROOT/tests/requirements.txt" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    mkdir -p "$SCRATCH"; chmod 777 "$SCRATCH"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$ROOT/tests/requirements.txt"
    echo "$want" >"$stamp"
  fi
  export PATH="$venv/bin:$PATH"
}

# regress_result LABEL STATUS HERE OUT NAME...: after a pg_regress-style run
# with --inputdir=HERE --outputdir=OUT, either accept the results as the new
# expected output (ACCEPT=1; exits 0) or, on failure, print the diffs.
# Returns STATUS.
regress_result() {
  local label=$1 status=$2 here=$3 out=$4; shift 4
  if [ "${ACCEPT:-0}" = 1 ]; then
    local name
    for name in "$@"; do cp "$out/results/$name.out" "$here/expected/$name.out"; done
    echo "$label: expected output updated from this run"
    exit 0
  fi
  if [ "$status" -ne 0 ]; then
    echo "$label: FAILED (exit $status); regression.diffs:"
    cat "$out/regression.diffs" 2>/dev/null || echo "(no regression.diffs)"
  fi
  return "$status"
}

# The stage's name in messages: the script's directory for tests/NAME/run.sh,
# else the script's name (tests/NAME.sh). A script may set another after
# sourcing this file.
STAGE=$(basename "$0" .sh)
[ "$STAGE" != run ] || STAGE=$(basename "$(dirname "$0")")

# fail MESSAGE...: "STAGE: FAIL: MESSAGE" and exit 1.
fail() { echo "$STAGE: FAIL: $*"; exit 1; }

# q DB SQL: the statement's result, unaligned, without headers.
q() { psql_q -At -d "$1" -c "$2"; }

# The host application's tables every suite shares (tables only, names
# unqualified: they land in the first schema on the search_path).
# shellcheck disable=SC2034  # used by the scripts that source this file
HOST_FIXTURE="$ROOT/tests/fixture/host.sql"

# load_host DB: creates the shared host tables (tests/fixture/host.sql) in DB.
load_host() { psql_q -d "$1" -f "$HOST_FIXTURE" >/dev/null; }

# The extension's version, from Cargo.toml.
project_version() { sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1; }

# pgrx_private_tree: `cargo pgrx test` installs its debug build, with a test
# schema, into the server it targets, overwriting the files in place. So the
# pgrx stage (and clippy, which then shares its build of pgrx-pg-sys) targets
# a private copy of $PG_CONFIG's installation under $SCRATCH/pg15-pgrx (bin,
# lib, share and the server headers, in the same layout, so the copy's
# pg_config and postgres report and find their own paths), with its own
# PGRX_HOME; the system server and ~/.pgrx are untouched. Made again when the
# system's PostgreSQL changed. Exports PGRX_HOME.
pgrx_private_tree() {
  local root="$SCRATCH/pg15-pgrx" bin share inc want d
  bin=$("$PG_CONFIG" --bindir); share=$("$PG_CONFIG" --sharedir); inc=$("$PG_CONFIG" --includedir-server)
  want="$("$PG_CONFIG" --version) $(stat -c %Y "$bin/postgres")"
  if [ "$(cat "$root/.source" 2>/dev/null)" != "$want" ]; then
    rm -rf "$root"
    for d in "$(dirname "$bin")" "$share" "$inc"; do
      mkdir -p "$root$(dirname "$d")"; cp -a "$d" "$root$(dirname "$d")/"
    done
    chmod -R a+rX "$root"
    echo "$want" >"$root/.source"
  fi
  export PGRX_HOME="$SCRATCH/pgrx-home-15"
  mkdir -p "$SCRATCH" "$PGRX_HOME"; chmod 777 "$SCRATCH"
  local pgc="$root$bin/pg_config"
  if ! grep -qsx "pg15 = \"$pgc\"" "$PGRX_HOME/config.toml"; then
    (cd "$ROOT" && cargo pgrx init --pg15 "$pgc" >/dev/null)
  fi
}

# apt_install [--no-install-recommends] PKG...: installs the packages that
# are not installed yet (one apt-get update first, only if something is
# missing). Idempotent.
apt_install() {
  local p missing=() apt_opts=()
  if [ "${1:-}" = --no-install-recommends ]; then apt_opts+=("$1"); shift; fi
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "$STAGE: installing ${missing[*]}"
  apt-get update -qq
  # slim images lack the man directory some postinsts (the JRE's) link into
  mkdir -p /usr/share/man/man1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_opts[@]}" "${missing[@]}" >/dev/null
}

# log_tail FILE [LINES]: the last LINES (30) lines of a server log, after a failure.
log_tail() {
  echo "server log tail ($1):"
  tail -n "${2:-30}" "$1" 2>/dev/null || echo "(no log)"
}

# require_installed: the server libpq reaches (PGHOST, PGPORT, PGUSER) answers
# and has apollo_jobs installed at this source's version (the default version
# CREATE EXTENSION installs); else says which is not so and exits 1. For
# suites run against an existing server.
require_installed() {
  local want have where="${PGHOST:-the default socket}, port ${PGPORT:-5432}, user ${PGUSER:-$(id -un)}"
  want=$(project_version)
  if ! have=$(psql_q -At -d postgres -c "SELECT coalesce(max(default_version), '') FROM pg_available_extensions WHERE name = 'apollo_jobs'" 2>&1); then
    echo "$STAGE: cannot query the server ($where): $have" >&2; exit 1
  fi
  local hint="install it first: make install PG_CONFIG=<that server's pg_config>"
  [ -n "$have" ] || { echo "$STAGE: apollo_jobs is not installed in the server ($where); $hint" >&2; exit 1; }
  [ "$have" = "$want" ] || { echo "$STAGE: the server ($where) has apollo_jobs $have installed, this source is $want; $hint" >&2; exit 1; }
}

# node_env: Node.js and tests/clients' pinned npm packages, installed if
# missing: Debian's nodejs and npm, then `npm ci` from package-lock.json only
# when the lockfile changed (a stamp in node_modules; npm ci wipes it). Sets
# PRISMA_NODE to a node that Prisma 7 accepts (^20.19 || ^22.12 || >=24): the
# machine's, or else Node.js 20 from the npm registry (node-linux-<arch>)
# installed into $SCRATCH/node (Debian 12's node is 18).
node_env() {
  local clients="$ROOT/tests/clients"
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install --no-install-recommends nodejs npm
  fi
  [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 18 ] || fail "node $(node --version) is too old (need 18+)"
  local stamp="$clients/node_modules/.package-lock.sha256" want
  want=$(sha256sum "$clients/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "$STAGE: npm ci"
    (cd "$clients" && npm ci --no-audit --no-fund --no-update-notifier --loglevel=error)
    echo "$want" >"$stamp"
  fi
  PRISMA_NODE=node
  if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number);
                process.exit(a >= 24 || (a === 22 && b >= 12) || (a === 20 && b >= 19) ? 0 : 1)'; then
    local version=20.20.2 pkg
    pkg="node-linux-$(node -p process.arch)"
    PRISMA_NODE="$SCRATCH/node/node_modules/$pkg/bin/node"
    if [ "$("$PRISMA_NODE" --version 2>/dev/null)" != "v$version" ]; then
      echo "$STAGE: npm install $pkg@$version (Node.js for Prisma 7)"
      mkdir -p "$SCRATCH"; chmod 777 "$SCRATCH"
      npm install --prefix "$SCRATCH/node" --no-save --no-audit --no-fund --loglevel=error "$pkg@$version"
    fi
  fi
}
