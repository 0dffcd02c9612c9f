.PHONY: demo test test-fast bench
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
# The pure tests, about a minute: no server of their own, no Dagster run (see the markers in pyproject.toml).
test-fast:
	bash scripts/test.sh -m "not services and not dagster and not slow"
bench:
	bash scripts/setup.sh && .venv/bin/python -m benchmarks.run_all
