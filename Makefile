# spectgan: `make demo` sets up and runs the main job, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo_output
WORKSTATION_PORT ?= 8000

.PHONY: install debs demo workstation test test-slow bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -c "import spectgan, torch, monailabel, pytomography, highdicom, SimpleITK, nilearn"
	touch $(STAMP)

debs:
	bash scripts/install-debs.sh

install: $(STAMP) debs

demo: install
	$(BIN)/spectgan demo --out $(DEMO_OUT)

# The browser workstation: a local Orthanc (storage in workstation_data/) with the sample studies, and the server.
workstation: install
	$(BIN)/spectgan workstation --port $(WORKSTATION_PORT) --data workstation_data

test: install
	$(BIN)/python -m pytest -ra

# The heaviest tests, marked slow and left out of `make test`: the server benchmark against a second real server,
# torchrun DDP training on two processes, the demo chain through a real server and Orthanc, the C2ST's null
# calibration at the full evaluation settings on a default-size cohort (built anew: minutes).
test-slow: install
	$(BIN)/python -m pytest -ra -m slow

clean:
	rm -rf $(DEMO_OUT) sample_data/cohorts .pytest_cache
