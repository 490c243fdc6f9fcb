# Set-up and everyday commands. `make demo` and `make test` install what they need first.
PYTHON ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.attention-reid-installed

.PHONY: install test test-slow test-all demo bench clean

# The demo: LAG-Net with the README's flags, at 64x32 on a synthetic Market-style set, from random
# weights; the untrained network is evaluated first, then trained, so both numbers are printed and
# metrics.png starts at the untrained point.
DEMO_DATA := data/synthetic
DEMO_FLAGS := --datadir $(DEMO_DATA) --batchid 8 --batchimage 4 --batchtest 64 --test_every 5 \
	--epochs 26 --decay_type step_320_380_420 --loss 1*CrossEntropy+2*Triplet+1*L2 --margin 1.2 \
	--lr 1e-3 --optimizer ADAM --random_erasing --amsgrad --height 64 --width 32 --no_pretrained

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

# The tests: `make test` runs every test not marked slow (a few minutes on 2 cores); `make
# test-slow` the slow ones (end-to-end CLI training runs, torchrun, the demo's claim; about ten
# minutes); `make test-all` both in one run. CI (.ci/run) runs `make test`, then `make test-slow`.
PYTEST = status=0; $(PY) -m pytest -q $(1) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no test: the suite is missing or failed to import" >&2; fi; \
	exit $$status

test: $(STAMP)
	@$(call PYTEST,-m "not slow")

test-slow: $(STAMP)
	@$(call PYTEST,-m slow)

test-all: $(STAMP)
	@$(call PYTEST,)

demo: $(STAMP)
	$(PY) -m common.data.synthetic $(DEMO_DATA)
	$(PY) lagnet/main.py $(DEMO_FLAGS) --eval_before_training --reset --save demo
	@$(PY) -c "import json; m = lambda p: next(iter(json.load(open(p))['targets'].values())); \
	u, t = m('experiment/demo/results_before_training.json'), m('experiment/demo/results_best.json'); \
	print(f\"demo: mAP {100 * u['mAP']:.1f}% untrained -> {100 * t['mAP']:.1f}% trained, \
	rank-1 {100 * u['rank1']:.1f}% -> {100 * t['rank1']:.1f}%; plots and logs in experiment/demo/\")"

# Evaluation/re-ranking speed, then every method compiled with each available backend (a quick
# sweep on a CPU; `$(PY) -m bench.compile_speed --full` on a GPU machine). The ONNX Runtime and
# OpenVINO rows need the deploy extra, which `make install` leaves out.
bench: $(STAMP)
	@$(PY) -c "import onnxruntime, openvino, nncf, onnxscript" 2>/dev/null || echo "make bench: \
	the ONNX Runtime and OpenVINO rows need the deploy extra: $(PY) -m pip install -e '.[deploy]'" >&2
	$(PY) -m bench.eval_speed
	$(PY) -m bench.compile_speed

clean:
	rm -rf .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
