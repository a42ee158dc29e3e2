# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo interhand format test bench clean
DEMO_TRAIN ?= 768
DEMO_TEST ?= 96

install: $(STAMP)

# torch is a test extra (parity with the PyTorch reference). Install the CPU build first:
# a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The embedded default: a synthetic InterHand2.6M, its TFRecords, training, evaluation, pictures.
DEMO := outputs/demo
demo: $(STAMP)
	$(PY) -m data_prep.synthetic --out=$(DEMO)/raw --num_train=$(DEMO_TRAIN) --num_test=$(DEMO_TEST) --seed=0 --rig=frontal --scene=demo
	$(VENV)/bin/tfds build data_prep/interhand26m --config interacting --manual_dir $(DEMO)/raw --data_dir $(DEMO)/tfds
	$(PY) train.py --config=configs/synthetic.py --workdir=$(DEMO)/run
	$(PY) evaluate.py --config=configs/synthetic.py --checkpoint=$(DEMO)/run --out=$(DEMO)/eval
	$(PY) -m dir_jax.demo --workdir=$(DEMO)/run --eval=$(DEMO)/eval --config=configs/synthetic.py --out=$(DEMO)

# Converts a raw InterHand2.6M download (RAW, laid out as the builder's instructions say) to TFRecords in OUT:
# CONFIG=interacting (DIR's training and test data) or CONFIG=all (single-hand annotations too, for evaluation).
RAW ?= data/InterHand2.6M
OUT ?= data/tfds
CONFIG ?= interacting
interhand: $(STAMP)
	$(VENV)/bin/tfds build data_prep/interhand26m --config $(CONFIG) --manual_dir $(RAW) --data_dir $(OUT)

# The code is formatted by pyink (settings in pyproject.toml): `make format` applies it, `make test` checks it.
format: $(STAMP)
	$(PY) -m pyink .

test: $(STAMP)
	$(PY) -m pyink --check --quiet .
	$(PY) -m pytest -q --durations=15

bench: $(STAMP)
	$(PY) bench/mano.py
	$(PY) bench/model.py
	$(PY) bench/flops.py
	$(PY) bench/loop_conv.py
	$(PY) bench/input_pipeline.py
	$(PY) bench/device_augment.py
	$(PY) bench/mesh_volume.py
	$(PY) bench/convert_interhand.py
	$(PY) bench/plan_interhand.py --fraction 0.125

clean:
	rm -rf $(VENV) outputs
