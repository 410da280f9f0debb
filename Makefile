# The two commands of the README. Both install what is missing first (scripts/setup.sh).
PY := .venv/bin/python

.PHONY: setup demo test bench fuzz clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest -q tests

# A long differential run against linux.uml (kernel_ref/fuzz): progress bar, then a summary.
# FUZZ_ARGS="--seed 7 --count 400 --save-scenarios found/" to change it.
FUZZ_ARGS ?= --seed long --count 200
fuzz: setup
	$(PY) -m kernel_ref fuzz $(FUZZ_ARGS)

# Every benchmark side by side with its anchor, one table (+ bench-results/*.json).
# BENCH_ARGS="--repeat 3 --only moo,large" to change it.
BENCH_ARGS ?=
bench: setup
	@$(PY) scripts/bench_table.py $(BENCH_ARGS)

clean:
	rm -rf .venv build demo-out .pytest_cache .hypothesis
