# The two commands of the README: `make demo` (main job) and `make test` (every test).
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-template test-reference test-reference-full bench reliability reliability-long render-reference clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py --out out/demo

test: setup test-template test-reference

test-template:
	$(PY) -m pytest tests

# XMem on 2 CPU cores needs ~4 minutes for the 1080p x 60 frames request, and with random
# test weights that test is an expected failure (its tracking-quality preamble): CI skips it
# here, `make test-reference-full` runs it.
REFERENCE_SLOW := tests/test_reliability.py::test_full_hd_60_frames_has_bounded_memory

test-reference:
	cd reference_xmem && ../$(PY) -m pytest --deselect $(REFERENCE_SLOW)

test-reference-full:
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
