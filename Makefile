# Two commands on a fresh machine:
#   make demo   installs everything, trains example_bot and holds a short scripted conversation
#   make test   installs everything (if needed), lints and runs the test suite
#   make test-fast   the same without the slow end-to-end tests (the dev loop)
#   make test-install   builds the wheel, installs it with Rasa in a fresh venv, trains a rasa init bot
#   make lock   re-resolves pyproject.toml's ranges in a fresh venv and rewrites constraints.txt
# Rasa 3.6 needs Python 3.8-3.10; PYTHON picks python3.10 from PATH or pyenv.
PYTHON ?= $(shell for p in python3.10 $$HOME/.pyenv/versions/3.10*/bin/python3.10; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-fast test-install lint lock benchmark clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "Python 3.10 not found: install it or run make PYTHON=/path/to/python3.10"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip<25"
	# one resolver call: installing torch/transformers separately would upgrade Rasa's pins;
	# constraints.txt holds the tested version of every package, so each install is the same
	$(BIN)/pip install -c constraints.txt -e ".[test]"
	touch $@

demo: install
	cd example_bot && ../$(BIN)/rasa train && ../$(BIN)/python converse.py

lint: install
	$(BIN)/ruff check rasa_meta research tests example_bot scripts

test: lint
	$(BIN)/python -m pytest --durations=15

test-fast: lint
	$(BIN)/python -m pytest -m "not slow"

test-install: install
	$(BIN)/python -m pytest -m install --run-install -p no:cacheprovider

lock:
	@test -n "$(PYTHON)" || { echo "Python 3.10 not found"; exit 1; }
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade "pip<25"
	.lock-venv/bin/pip install --quiet -e ".[test]"
	{ echo "# The versions rasa-meta is tested with: \`make install\` (and so CI) installs exactly these."; \
	  echo "# Refresh with \`make lock\` (a fresh resolve of pyproject.toml's ranges), then run \`make test\`."; \
	  .lock-venv/bin/pip freeze --exclude-editable; } > constraints.txt
	rm -rf .lock-venv

benchmark: install
	$(BIN)/rasa-meta benchmark --output-dir benchmark_results

clean:
	rm -rf $(VENV) example_bot/models example_bot/.rasa
