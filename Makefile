# The two set-up commands: `make run` (the service on the embedded default) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# what running needs; the test and release extras come on top of it
STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
RELEASE_STAMP := $(VENV)/.installed-release

.PHONY: run test install install-test install-release release system-deps lint bench clean

run: install
	$(VENV)/bin/streamforge serve $(ARGS)

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml package.json
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	# the player and uploader from npm; package.json's postinstall copies them into static/vendor
	npm ci --no-audit --no-fund --silent || npm install --no-audit --no-fund --silent
	touch $(STAMP)

install-test: $(TEST_STAMP) system-deps

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,release]'
	touch $(TEST_STAMP)

install-release: $(RELEASE_STAMP)

$(RELEASE_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[release]'
	touch $(RELEASE_STAMP)

# dist/streamforge: one executable with Python, every dependency, FFmpeg, weed and the static files
# (zlib level 6, not PyInstaller's 9: a quarter of the build time for 1% more bytes)
release: install-release
	PYINSTALLER_ZLIB_COMPRESSION_LEVEL=6 $(PY) -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
		packaging/streamforge.spec
	$(PY) packaging/finish.py dist/streamforge

# Debian packages the tests drive for real: Chromium for the browser tests, docker-compose to
# validate docker/compose.yml, ffmpeg for the benchmarks' baselines. Installed only when missing.
system-deps:
	sh scripts/system-deps.sh

lint:
	$(VENV)/bin/ruff check streamforge tests bench

clean:
	rm -rf $(VENV) node_modules streamforge/web/static/vendor build dist
