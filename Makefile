# The two commands of the README: `make run` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench worst-case harden browser check-config clean accuracy

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)  ## set up and serve on 127.0.0.1:8080 (SPINE_CDS_HOST / SPINE_CDS_PORT)
	$(BIN)/spine-cds serve

browser:  ## Debian's Chromium and its driver, for the browser tests (skipped, saying so, without them)
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
	    || echo "make: Chromium could not be installed here: the browser tests will be skipped"; }

test: $(STAMP) browser  ## set up and run the whole test suite
	$(BIN)/python -m pytest

check-config: $(STAMP)
	$(BIN)/spine-cds check-config

clean:
	rm -rf $(VENV) data .pytest_cache

accuracy: $(STAMP)  ## the chart corpus scorecard: cards expected, produced, wrong, per rule and class
	$(BIN)/python bench/accuracy.py

bench: $(STAMP)  ## benchmark: spine-cds serve vs the bare stack, figures against targets
	$(BIN)/python bench/run.py

worst-case: $(STAMP)  ## the text reader on pathological and large texts: cost by shape and size, growth exponents
	$(BIN)/python bench/worst_case.py

harden: $(STAMP)  ## hardening report: attacks, fuzzing, faults, load and crash, log privacy
	$(BIN)/python hardening/report.py
