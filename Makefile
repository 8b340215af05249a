# rf_ref: `make test` and `make demo` do all set-up on a fresh machine with Python 3.11.
# VENV may point outside the clone (.ci/run keeps one under ~/.cache) so fresh clones reuse it.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
DEPS_STAMP := $(VENV)/.rf_ref-deps
PKG_STAMP := $(VENV)/.rf_ref-pkg
export MPLBACKEND ?= Agg
export PYTHONHASHSEED ?= 0

.PHONY: install test check nbtest pytest portability slow demo clean export

# Reinstall only when the pins change (deps) or the clone moved / packaging changed (package).
install:
	@want="$$(cat requirements.txt | sha256sum | cut -c1-16)"; \
	if [ "$$(cat $(DEPS_STAMP) 2>/dev/null)" != "$$want" ]; then \
	  echo "== installing pinned dependencies into $(VENV) (several minutes the first time)"; \
	  [ -x $(PY) ] || $(PYTHON) -m venv $(VENV) || exit 1; \
	  $(PY) -m pip install -q --upgrade pip && \
	  $(PY) -m pip install -q -r requirements.txt && echo "$$want" > $(DEPS_STAMP) || exit 1; \
	fi; \
	want="$$(cat setup.py settings.ini | sha256sum | cut -c1-16) $(CURDIR)"; \
	if [ "$$(cat $(PKG_STAMP) 2>/dev/null)" != "$$want" ]; then \
	  echo "== installing rf_ref (editable) from $(CURDIR)"; \
	  $(PY) -m pip install -q --no-deps --no-build-isolation -e . && echo "$$want" > $(PKG_STAMP) || exit 1; \
	fi

# The exported package and the cleaned notebooks must be what is committed.
check: install
	@bash .ci/check-nbdev $(BIN)
	@$(BIN)/lint-imports --no-cache >/dev/null || $(BIN)/lint-imports --no-cache
	@$(BIN)/ruff check --quiet --select F --exclude rf_ref/_modidx.py rf_ref

# two notebook workers share the machine: one thread each (torch would otherwise take every core per worker)
nbtest: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/nbdev_test --n_workers 2 --timing

pytest: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/pytest -q tests

test: check nbtest pytest

# The notebooks again under another CPU instruction set than this machine's best: a numeric bar that sits on one
# family's rounding fails here, not on a user's machine. AVX-512 machines drop to AVX2, others to the generic kernels.
ISA ?= $(shell grep -q avx512f /proc/cpuinfo 2>/dev/null && echo avx2 || echo default)
ISA_ENV = $(if $(filter avx2,$(ISA)),ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2,\
          ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41)
# torch.compile's cache does not key on ATEN_CPU_CAPABILITY: kernels compiled under one instruction set and loaded
# under another corrupted memory or gave NaN (measured on torch 2.15, 31_train's compiled-backbone check), and
# under the generic kernels they did not build; so each set keeps its own cache.
PORTABILITY_CACHE ?= $(or $(TMPDIR),/tmp)/rf_ref-inductor-$(ISA)
portability: install
	@echo "== the notebooks under ISA=$(ISA): $(ISA_ENV)"
	$(ISA_ENV) TORCHINDUCTOR_CACHE_DIR=$(PORTABILITY_CACHE) OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/nbdev_test --n_workers 2 --timing

# Cells marked #| slow (run them before finishing work that touches what they cover).
slow: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/nbdev_test --n_workers 2 --flags slow --timing

export: install
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean && $(PY) .ci/readme.py

demo: install
	$(BIN)/rf-ref demo --out outputs/demo

clean:
	rm -rf outputs _proc _docs .pytest_cache
