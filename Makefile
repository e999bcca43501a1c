# The two commands of the README: `make demo` (main job) and `make test` (every test).
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-template test-runtime test-reference bench reliability reliability-long render-reference clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py --out out/demo

# Three suites: the template (bakes, hooks, the reference rendering, a bake installed in a
# fresh venv, the Docker images), the runtime's own tests, and the reference apps' (the
# runtime's suites against XMem and SAM 2.1, and each model's own tests).
test: setup test-template test-runtime test-reference

test-template:
	$(PY) -m pytest tests

test-runtime:
	cd runtime && ../$(PY) -m pytest

test-reference:
	cd reference_xmem && ../$(PY) -m pytest
	cd reference_sam2 && ../$(PY) -m pytest

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
