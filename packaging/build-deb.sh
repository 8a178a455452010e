#!/usr/bin/env bash
# Builds postgresql-N-apollo-jobs_VERSION_ARCH.deb: the release build of
# apollo_jobs for PostgreSQL major N, laid out as Debian's (and
# apt.postgresql.org's) postgresql-N packages expect it, i.e. what their
# `pg_config --pkglibdir` and `--sharedir` report:
#   /usr/lib/postgresql/N/lib/apollo_jobs.so
#   /usr/share/postgresql/N/extension/apollo_jobs.control, apollo_jobs--*.sql
#   /usr/share/doc/postgresql-N-apollo-jobs/copyright, changelog.gz
# Depends: postgresql-N and the C libraries the .so links (libc6, libgcc-s1).
#
#   packaging/build-deb.sh [--pg-config PATH] [--from DIR] [--major N] [--out DIR]
#
#   --pg-config  the pg_config of the major to build for (default $PG_CONFIG,
#                else /usr/lib/postgresql/15/bin/pg_config); the build is
#                `cargo pgrx package` (a release build) with that major's Cargo feature
#                (for a major other than the default pg15, `cargo pgrx init
#                --pgN PATH` once beforehand)
#   --from DIR   package an existing `cargo pgrx package` output directory
#                instead of building (any paths inside: the files are found by
#                name); --major N then says which major it was built for
#   --out DIR    where the .deb goes (default: the current directory)
# Needs dpkg-deb and objdump (binutils). Prints the .deb's path. The .so is
# packaged as built (not stripped again), byte for byte the tested one.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"

pgc=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
from="" major="" out=$PWD
while [ $# -gt 0 ]; do
  case $1 in
    --pg-config) pgc=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    --major) major=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
  esac
done
die() { echo "build-deb: $*" >&2; exit 1; }
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
command -v objdump >/dev/null || die "objdump not found (apt-get install binutils)"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
description=$(sed -n 's/^description = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
arch=$(dpkg --print-architecture)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

if [ -z "$from" ]; then
  [ -x "$pgc" ] || die "no pg_config at $pgc"
  major=$("$pgc" --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
  [ -n "$major" ] || die "cannot tell the major of $pgc"
  from="$tmp/built"
  features=()
  [ "$major" = 15 ] || features=(--no-default-features --features "pg$major")
  echo "build-deb: cargo pgrx package --pg-config $pgc ${features[*]}" >&2
  (cd "$ROOT" && cargo pgrx package --pg-config "$pgc" "${features[@]}" --out-dir "$from" >&2)
fi
[ -n "$major" ] || die "--from needs --major N"
[ -d "$from" ] || die "no directory $from"

name="postgresql-$major-apollo-jobs"
deb="$out/${name}_${version}_${arch}.deb"
stage="$tmp/root"
libdir="$stage/usr/lib/postgresql/$major/lib"
extdir="$stage/usr/share/postgresql/$major/extension"
docdir="$stage/usr/share/doc/$name"
umask 022
mkdir -p "$libdir" "$extdir" "$docdir" "$stage/DEBIAN"

mapfile -t sos < <(find "$from" -type f -name apollo_jobs.so)
[ ${#sos[@]} -eq 1 ] || die "expected one apollo_jobs.so under $from, found ${#sos[@]}"
install -m 0644 "${sos[0]}" "$libdir/apollo_jobs.so"
mapfile -t exts < <(find "$from" -type f -path '*/extension/apollo_jobs*' \( -name '*.control' -o -name '*.sql' \))
n_control=0
for f in "${exts[@]}"; do
  case $f in *.control) n_control=$((n_control + 1)) ;; esac
  install -m 0644 "$f" "$extdir/$(basename "$f")"
done
[ "$n_control" = 1 ] || die "expected one apollo_jobs.control under $from, found $n_control"
[ -e "$extdir/apollo_jobs--$version.sql" ] || die "no apollo_jobs--$version.sql under $from (built from another version?)"

{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: apollo_jobs"
  echo
  echo "Files: *"
  echo "Copyright: $(sed -n 's/^Copyright (c) //p' "$ROOT/LICENSE" | head -1)"
  echo "License: MIT"
  sed -e 's/^$/./' -e 's/^/ /' "$ROOT/LICENSE"
} >"$docdir/copyright"
gzip -9n <"$ROOT/CHANGELOG.md" >"$docdir/changelog.gz"

# Runtime libraries: the newest glibc symbol version the .so uses.
glibc=$(objdump -T "$libdir/apollo_jobs.so" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
depends="postgresql-$major"
[ -z "$glibc" ] || depends+=", libc6 (>= $glibc)"
objdump -p "$libdir/apollo_jobs.so" | grep -q 'NEEDED *libgcc_s\.so' && depends+=", libgcc-s1"

# Reproducible: every mtime is the last commit's (or the Cargo.toml's) time.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || stat -c %Y "$ROOT/Cargo.toml")}
export SOURCE_DATE_EPOCH=$epoch
find "$stage" -exec touch -h -d "@$epoch" {} +

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: ${DEB_MAINTAINER:-apollo_jobs contributors <apollo-jobs@localhost>}
Installed-Size: $size
Depends: $depends
Section: database
Priority: optional
Description: apollo_jobs extension for PostgreSQL $major
 $description.
 .
 Get-or-create of batch-revoke job rows on the workflow id, branded job ids
 (oj_/pj_), tenant-scoped getter and keyset listing; CREATE EXTENSION
 apollo_jobs in each database that uses it.
EOF
(cd "$stage" && find usr -type f | LC_ALL=C sort | xargs md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"
touch -d "@$epoch" "$stage/DEBIAN" "$stage/DEBIAN"/*

mkdir -p "$out"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
