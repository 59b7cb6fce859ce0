# Two commands matter: `make run` (try it) and `make test` (what CI runs). Both work from a bare
# clone on a fresh Debian machine: they create .venv and install what they need first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two install stamps: `make run` needs only what running needs (pip install -e .), `make test` and
# `make lint` add the development tools (the `dev` extras: pytest, hypothesis, mypy, ruff). The dev
# install covers running too, so it touches both stamps: `make run` after `make test` installs
# nothing, and `make test` from a bare clone installs everything in one pip run.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
DEMO_DIR := var/demo

# Debian packages the tests use: the real logrotate binary for rotation tests, tmux to see
# terminal output as a person does (capture-pane),
# systemd-analyze (package systemd) for the unit file checks.
DEBIAN_TEST_PACKAGES := logrotate systemd tmux
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint bench install clean debian-packages venv

venv: $(DEV_STAMP)

# the venv itself, with an up-to-date pip; order-only below, so its age never triggers an install
$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "logwarden needs Python >= 3.11"'
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV) || { \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && \
		$(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(RUN_STAMP)

debian-packages:
	@missing=""; for p in $(DEBIAN_TEST_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The demo: follow a copy of the shipped sample log from its beginning, then keep watching it.
run: $(RUN_STAMP)
	@mkdir -p $(DEMO_DIR)
	@[ -f $(DEMO_DIR)/auth.log ] || cp config/examples/samples/auth.log $(DEMO_DIR)/auth.log
	@[ -f $(DEMO_DIR)/app.log ] || cp config/examples/samples/app.log $(DEMO_DIR)/app.log
	$(BIN)/logwarden run --foreground -c config/demo.toml

lint: $(DEV_STAMP)
	$(BIN)/ruff check daemon tests
	$(BIN)/ruff format --check daemon tests
	$(BIN)/mypy

test: $(DEV_STAMP) debian-packages lint
	$(BIN)/python -m pytest -q

bench: $(RUN_STAMP)  # the benchmarks use the package and the standard library only
	$(BIN)/python tests/bench/run.py

# Install as a service: a venv under /opt (DynamicUser= services cannot see /home, /root or /tmp).
PREFIX ?= /opt/logwarden
install:
	$(PYTHON) -m venv $(PREFIX)
	$(PREFIX)/bin/pip install --quiet .
	install -d -m 0755 /etc/logwarden
	[ -f /etc/logwarden/logwarden.toml ] || install -m 0644 config/logwarden.toml /etc/logwarden/logwarden.toml
	install -m 0644 systemd/logwarden.service /etc/systemd/system/logwarden.service
	@echo "installed; now: systemctl daemon-reload && systemctl enable --now logwarden"

clean:
	rm -rf $(VENV) var build *.egg-info daemon/*.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
