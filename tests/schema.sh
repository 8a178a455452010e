#!/usr/bin/env bash
# The installed install script must be the checked-in sql/apollo_jobs--<version>.sql
# (comments aside): a schema change is a new version with an upgrade script,
# never a silent edit of 0.1.0.
source "$(dirname "$0")/lib.sh"
version=$(project_version)
installed="$("$PG_CONFIG" --sharedir)/extension/apollo_jobs--$version.sql"
checked_in="$ROOT/sql/apollo_jobs--$version.sql"
# pgrx orders independent items by a dependency graph: compare the blocks as a sorted set.
blocks() {
  python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = []
for block in text.split("/* <begin connected objects> */"):
    lines = [l for l in block.splitlines()
             if l.strip() and not l.startswith("--") and not l.startswith("/*")
             and not l.startswith("*/") and not l.startswith("This file is auto generated")
             and not l.startswith("The ordering of items")]
    if lines:
        blocks.append("\n".join(lines))
print("\n\n".join(sorted(blocks)))
PY
}
if ! diff <(blocks "$checked_in") <(blocks "$installed"); then
  echo "schema: the generated install script differs from sql/apollo_jobs--$version.sql"
  exit 1
fi
for up in "$ROOT"/sql/apollo_jobs--*--*.sql; do
  [ -e "$up" ] || continue
  head -3 "$up" | grep -q '\\quit' || { printf 'schema: %s lacks the \\echo … \\quit guard\n' "$up"; exit 1; }
done
echo "schema: install script for $version matches sql/"
