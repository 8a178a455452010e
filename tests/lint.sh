#!/usr/bin/env bash
# Static checks: rustfmt and clippy (warnings are errors), through the
# .cargo/config.toml aliases, and shellcheck (installed with apt if missing)
# on every shell script of the checkout (tracked or new, not ignored), each
# following what it sources from its own directory (`# shellcheck
# source=../lib.sh` beside `source "$(dirname "$0")/../lib.sh"`). Every check
# runs; prints their findings and one summary line, exits non-zero if any
# found something. Also: `make`'s toolchain check names what is missing.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
apt_install shellcheck

failed=()
cargo format-check || failed+=(rustfmt)
# clippy builds pgrx-pg-sys as the pgrx stage does (its private PostgreSQL
# copy), so the two stages share that build instead of redoing it.
pgrx_private_tree
cargo lint || failed+=(clippy)
mapfile -t scripts < <(git ls-files --cached --others --exclude-standard -- '*.sh' .ci/run | sort -u)
shellcheck -x -P SCRIPTDIR "${scripts[@]}" || failed+=(shellcheck)
# `make install` on a machine without Rust says what to do (Makefile's
# toolchain check), rather than "cargo: command not found".
if out=$(env -i PATH=/usr/bin:/bin HOME=/nonexistent make -s toolchain 2>&1) \
    || ! grep -q "no cargo" <<<"$out" || ! grep -q "rustup" <<<"$out"; then
  echo "lint: make toolchain without cargo: ${out:-(no message)}"; failed+=(toolchain-check)
fi
make -s toolchain || failed+=(toolchain-check)

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: FAILED: ${failed[*]}"
  exit 1
fi
echo "lint: ok (rustfmt, clippy, shellcheck on ${#scripts[@]} scripts, make's toolchain check)"
