# bacula-ec2 — every target does its own set-up on a fresh Debian bookworm machine.
#   make demo   backup + restore through a real Bacula 15.0.3 stack and the AWS simulator
#   make test   lint, type checks and the whole test suite (incl. real-Bacula end-to-end)
#   make test-package  the .deb inside a Debian 13 root, run by Debian's own bacula-fd
#   make package  dist/bacula-ec2-plugin_<version>_<arch>.deb for Debian 13's bacula-fd 15.0.3-3

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all deps venv bacula demo test unit lint format bench clean test-package package

all: test

deps:
	bash packaging/install-deps.sh

$(STAMP): pyproject.toml
	bash packaging/install-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

bacula: venv
	bash packaging/build-bacula.sh >/dev/null
	bash packaging/build-plugin.sh --python $(PY) >/dev/null

demo: bacula
	$(PY) -m devkit.demo

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check bacula_ec2 protocol devkit/*.py devkit/harness
	$(PY) -m mypy bacula_ec2 protocol devkit

# Two workers (the machine has two cores; most e2e time is spent waiting on daemons and
# simulated latency): each test file runs whole on one worker, with its own simulator and
# its own Bacula stacks on free loopback ports. About 10 minutes instead of 18.
test: lint bacula
	$(PY) -m pytest -q -n 2 --dist loadfile

unit: venv
	$(PY) -m pytest -q -m "not bacula"

# The .deb for Debian 13's bacula-fd 15.0.3-3 (packaging/build-deb.sh; its steps are
# cached, a second run takes about a second), checked by lintian.
package: venv
	bash packaging/build-deb.sh --python $(PY)

# Debian 13's own bacula-fd (a cached debootstrapped trixie root, needs root) running the
# .deb of `make package`: see docs/INSTALL.md. Not part of `make test`.
test-package: bacula package
	bash packaging/trixie-root.sh >/dev/null
	$(PY) -m pytest -q tests/package

# One run of every figure docs/PERFORMANCE.md quotes (about 10 minutes): the Full (and the
# same Full with the backend of BENCH_BEFORE, the last commit before issue 15's work),
# four jobs at once, Incrementals of 1 TiB and 16 TiB volumes, memory, dsnap, the real FD;
# then restore into AWS. Results in bench/results/.
BENCH_BEFORE ?= 6699807
bench: bacula
	$(PY) -m bench.backup --gib 8 --before $(BENCH_BEFORE)
	$(PY) -m bench.restore_throughput --blocks 8000

format: venv
	$(PY) -m ruff format bacula_ec2 protocol devkit/*.py devkit/harness tests
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
