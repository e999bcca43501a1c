# The two commands of the README: `make demo` (main job) and `make test` (every test).
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-template test-reference bench reliability reliability-long render-reference clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py --out out/demo

test: setup test-template test-reference

test-template:
	$(PY) -m pytest tests

test-reference:
	cd reference_xmem && ../$(PY) -m pytest

bench: setup
	$(PY) benchmarks/run_all.py

reliability: setup
	$(PY) scripts/reliability_report.py

reliability-long: setup
	$(PY) scripts/reliability_report.py --long

render-reference: setup
	$(PY) scripts/render_reference.py

clean:
	rm -rf out .pytest_cache
