# Two set-up commands that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.provenir-installed

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first: the pinned CPU wheel (an unpinned torch pulls a multi-GB CUDA build)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/provenir demo

test: $(STAMP)
	bash scripts/run_tests.sh $(PY)

test-fast: $(STAMP)
	bash scripts/run_tests.sh $(PY) -m 'not slow and not gpu and not network'

clean:
	rm -rf $(VENV) artifacts .pytest_cache
