# Thin PGXS-style entry points; the scripts under tests/ do the work and
# install their own prerequisites (see README).
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
export PG_CONFIG

.PHONY: all install installcheck test demo bench lint toolchain

# Building needs Rust (cargo) and cargo-pgrx 0.18.1; a fresh Debian has
# neither. Say so, and what to do, instead of "cargo: command not found".
toolchain:
	@PATH="$$HOME/.cargo/bin:$$PATH"; \
	if ! command -v cargo >/dev/null 2>&1; then \
	  echo "apollo_jobs is built with Rust, and this machine has no cargo." >&2; \
	  echo "  Install Rust with rustup (https://rustup.rs), then: bash tests/setup.sh" >&2; \
	  echo "  Or build a .deb elsewhere and install that (README: Installation, From a package)." >&2; \
	  exit 1; \
	fi; \
	if ! cargo pgrx --version 2>/dev/null | grep -q ' 0\.18\.1$$'; then \
	  echo "apollo_jobs needs cargo-pgrx 0.18.1 (found: $$(cargo pgrx --version 2>/dev/null || echo none))." >&2; \
	  echo "  Run: bash tests/setup.sh   (installs it and the PostgreSQL 15 headers, pgrx init)" >&2; \
	  exit 1; \
	fi

# The release build for $(PG_CONFIG)'s major (its Cargo feature pgN).
all: toolchain
	cargo build --release --no-default-features --features pg$$($(PG_CONFIG) --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')

# The release build into $(PG_CONFIG)'s server. Files are built into a
# package directory and moved into place (tests/lib.sh install_extension), so
# a running server keeps the library it has loaded instead of crashing on an
# overwritten one.
install: toolchain
	bash -c 'source tests/lib.sh && install_extension'

# The pg_regress and isolation suites against the server you already run
# (PGHOST, PGPORT, PGUSER from the environment), with the extension installed
# there: no build, no install, no scratch cluster.
installcheck:
	bash tests/pg_regress/run.sh --existing
	bash tests/isolation/run.sh --existing

# A .deb for $(PG_CONFIG)'s major (postgresql-N-apollo-jobs_VERSION_ARCH.deb
# in this directory), installable with apt-get without a Rust toolchain.
.PHONY: package
package: toolchain
	bash packaging/build-deb.sh --pg-config $(PG_CONFIG)

test:
	bash tests/run.sh

demo:
	bash tests/demo.sh

bench:
	bash tests/bench/run.sh

lint:
	cargo format-check
	cargo lint
