.PHONY: setup test demo lint

setup:
	bash scripts/setup.sh

test: setup
	.venv/bin/ruff check flatkit tests benchmarks examples
	.venv/bin/python -m pytest tests -n 2 --dist loadfile --no-loadscope-reorder

lint: setup
	.venv/bin/ruff check flatkit tests benchmarks examples

demo: setup
	.venv/bin/flatkit demo
