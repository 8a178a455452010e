#!/usr/bin/env bash
# rustfmt and clippy (warnings are errors), through the .cargo/config.toml aliases.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
cargo format-check
cargo lint
