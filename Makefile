# Two commands for a newcomer: `make run` (serve the default models) and `make test`.
# Both create .venv/ on first use and are idempotent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install classify-sample bench audit clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[train,dev,ray]'
	@# 21cmFAST builds from C sources and needs libfftw3-dev + libgsl-dev (.ci/run installs them);
	@# without them the lightcone *simulation* tests skip and everything else still runs.
	$(BIN)/pip install -q -e '.[sim21]' || echo "WARNING: 21cmFAST not built (apt-get install libfftw3-dev libgsl-dev); its tests will skip"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/specula serve

classify-sample: $(STAMP)
	$(BIN)/specula classify ../shared/data/sdss/spec-1198-52669-0063.fits

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Known-vulnerability audit of the installed environment (needs PyPI's JSON API / OSV).
audit: $(STAMP)
	$(BIN)/pip-audit --skip-editable --progress-spinner off

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
