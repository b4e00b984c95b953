# Two commands do all the set-up on a fresh Debian 12 machine (as root or with sudo):
#   make demo   the local cloud + fab bootstrap + a sample experiment and its model served;
#               prints the URL and a curl line
#   make test   the whole suite (unit, service and end-to-end tiers)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DIR := /var/tmp/mlflow-kit/demo
DEMO_SETTINGS := $(DEMO_DIR)-settings.yaml
DEMO_CERT := $(dir $(DEMO_DIR))demo-server.crt

.PHONY: demo demo-down test unit lint system-packages venv bench

system-packages:
	@bash tests/localcloud/install-system-packages.sh

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

venv: system-packages $(VENV)/.installed

test: venv
	$(SUDO) $(PY) -m pytest -n 2 --dist loadgroup --durations=0 --durations-min=5

unit: venv
	$(PY) -m pytest -m unit -q

lint: venv
	$(VENV)/bin/ruff check .

demo: venv
	$(SUDO) env PYTHONPATH=. $(PY) -m tests.localcloud up --run-dir $(DEMO_DIR) --settings-out $(DEMO_SETTINGS)
	$(SUDO) $(VENV)/bin/fab bootstrap --settings $(DEMO_SETTINGS)
	$(SUDO) env PYTHONPATH=. $(PY) -m tests.localcloud.demo $(DEMO_SETTINGS)
	$(SUDO) $(VENV)/bin/fab serve-model --name demo-classifier --alias champion --settings $(DEMO_SETTINGS)
	$(SUDO) env PYTHONPATH=. $(PY) -m tests.localcloud.demo --model $(DEMO_SETTINGS)

demo-down:
	@if [ -x $(PY) ]; then $(SUDO) env PYTHONPATH=. $(PY) -m tests.localcloud down --run-dir $(DEMO_DIR); fi
	@$(SUDO) rm -f $(DEMO_SETTINGS) $(DEMO_CERT)

bench: venv
	$(SUDO) env PYTHONPATH=. $(PY) bench/localcloud
