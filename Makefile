# `make demo` and `make test` each create .venv themselves on a machine with only Python 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# jax: the tests run the jax backend end to end on CPU too (a small sweep, report, export, predict)
EXTRAS ?= cpu,jax,test
export VIDEOSWEEP_CACHE ?= $(CURDIR)/.cache/videosweep

.PHONY: install demo demo-motion test test-fast bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(BIN)/.installed

# The story first (about 1.5 minutes on 2 cores): a model that sees time learns which way a square moves,
# an image-only model stays at chance; then the seals pipeline from frames to an exported, applied model.
demo-motion: install
	test -f data/motion/labels.csv || $(BIN)/videosweep data demo --out data/motion --kind motion
	$(BIN)/videosweep run sweeps/motion-demo.yaml
	$(BIN)/videosweep report sweeps/motion-demo.yaml
	$(BIN)/videosweep best sweeps/motion-demo.yaml --pareto
	@echo "Report: runs/motion-demo/report/report.html (C3D-small learns the motion; the image model cannot)"

demo: demo-motion
	$(BIN)/videosweep plan sweeps/seals-demo.yaml
	$(BIN)/videosweep run sweeps/seals-demo.yaml
	$(BIN)/videosweep report sweeps/seals-demo.yaml
	@echo "Seals export with --allow-baseline: one validation video and no ImageNet weights offline, so no seals" \
		"model can clear the majority baseline (the motion demo shows learning)"
	$(BIN)/videosweep export sweeps/seals-demo.yaml --out runs/seals-demo/export --overwrite --allow-baseline
	$(BIN)/videosweep predict runs/seals-demo/export --video examples/seals-s28-20.mp4 --fps 4 \
		--out runs/seals-demo/s28-20-frame-predictions.csv
	@echo "Report: runs/seals-demo/report/report.html   Model: runs/seals-demo/export/"
	@echo "Browse the runs: $(BIN)/videosweep ui sweeps/seals-demo.yaml   (http://127.0.0.1:5000)"

# Two pytest processes by default: an end-to-end test spends about half its time waiting on processes it started
# (workers importing TensorFlow, MLflow's store, polling), so two fill two cores. Files are the unit (--dist
# loadfile): a file's tests share its module-scoped sweeps. TEST_JOBS=1 runs them one at a time.
TEST_JOBS ?= 2
test: install
	bash .ci/ensure-chromium
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile -m "not slow"

bench: install
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .cache runs demo-out test-artifacts data/motion
