# The two set-up commands: `make run` (the service on the embedded default) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install install-test system-deps lint bench clean

run: install
	$(VENV)/bin/streamforge serve $(ARGS)

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml package.json
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# the player and uploader from npm; package.json's postinstall copies them into static/vendor
	npm ci --no-audit --no-fund --silent || npm install --no-audit --no-fund --silent
	touch $(STAMP)

install-test: install system-deps

# Debian packages the tests drive for real: Chromium for the browser tests, docker-compose to
# validate docker/compose.yml, ffmpeg for the benchmarks' baselines. Installed only when missing.
system-deps:
	sh scripts/system-deps.sh

lint:
	$(VENV)/bin/ruff check streamforge tests bench

clean:
	rm -rf $(VENV) node_modules streamforge/web/static/vendor
