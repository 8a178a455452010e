# Thin PGXS-style entry points; the scripts under tests/ do the work and
# install their own prerequisites (see README).
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
export PG_CONFIG

.PHONY: all install installcheck test demo bench lint

all:
	cargo build --release

install:
	cargo pgrx install --release --pg-config $(PG_CONFIG)

# SQL-level suites against a scratch cluster with the installed build
installcheck:
	bash tests/run.sh pg_regress dump_restore

test:
	bash tests/run.sh

demo:
	bash tests/demo.sh

bench:
	bash tests/bench/run.sh

lint:
	cargo format-check
	cargo lint
