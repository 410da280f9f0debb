# The two commands of the README. Both install what is missing first (scripts/setup.sh).
PY := .venv/bin/python

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest -q tests

bench: setup
	@for b in scripts/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .venv build demo-out .pytest_cache .hypothesis
