# Set-up and entry points. Every target does all of its set-up on a fresh machine.
#   make demo    venv + torch (CPU) + pst, then the self-training demo on the toy scenes
#   make test    the same set-up plus test extras, the CMake op library, then the test suite
#   make bench   the benchmarks against scikit-learn / OpenCV / scipy / cc3d / fastcluster, and under contention
#   make sanitize  the op library under AddressSanitizer + UBSan, then the op tests and the fuzz tests on it
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
TORCH   ?= torch==2.13.0
OUT     ?= runs/demo
PYTEST_ARGS ?=
CMAKE_BUILD := build/cmake
SAN_BUILD   := build/sanitize
FUZZ        ?= fast

.PHONY: demo test bench setup setup-test build cmake-lib cuda-check sanitize clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first and pinned: pst's own "torch>=..." is then already satisfied, so pip never
# pulls a second (CUDA) torch onto a CPU machine.
$(VENV)/.torch: $(VENV)/bin/python
	$(PIP) install -q "$(TORCH)"
	touch $@

$(VENV)/.pst: $(VENV)/.torch pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu)
	$(PIP) install -q setuptools wheel ninja
	@echo "Building pst and compiling its C++ ops (pst._C): about 5-10 minutes on 2 cores, silent until done."
	$(PIP) install -q --no-build-isolation -e ".[cpu]"
	touch $@

$(VENV)/.test: $(VENV)/.pst
	$(PIP) install -q --no-build-isolation -e ".[cpu,test]"
	touch $@

$(VENV)/.bench: $(VENV)/.test
	$(PIP) install -q --no-build-isolation -e ".[cpu,test,bench]"
	touch $@

setup: $(VENV)/.pst
setup-test: $(VENV)/.test

demo: setup
	$(VENV)/bin/pst demo --out $(OUT)

# The second build of the same sources, for libtorch users; a test loads it.
cmake-lib: setup
	mkdir -p $(CMAKE_BUILD)
	cmake -S . -B $(CMAKE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" > $(CMAKE_BUILD).log 2>&1 \
	  || (cat $(CMAKE_BUILD).log; exit 1)
	cmake --build $(CMAKE_BUILD)

# Compile-check every CUDA source with nvcc when it is installed (no GPU needed).
cuda-check:
	@if command -v nvcc >/dev/null 2>&1; then \
	  for f in csrc/cuda/*.cu; do [ -e "$$f" ] || continue; echo "nvcc -c $$f"; \
	    nvcc -std=c++17 -O2 -Icsrc --expt-relaxed-constexpr -gencode=arch=compute_90,code=sm_90 \
	      -c "$$f" -o /tmp/pst_cuda_check.o || exit 1; done; \
	else echo "nvcc not found: CUDA sources not compile-checked"; fi

test: setup-test cmake-lib
	PST_CMAKE_LIB=$(CURDIR)/$(CMAKE_BUILD)/libpst_ops.so $(PY) -m pytest $(PYTEST_ARGS)

# The op library again, built with -fsanitize=address,undefined into $(SAN_BUILD) (pst/_C*.so is
# left alone). pst loads it instead of pst._C when PST_OPS_LIB names it; python itself is not
# instrumented, so libasan is preloaded, and its leak report (python's own) is off. Any ASan or
# UBSan report aborts the run. FUZZ=long runs the long fuzz profile.
SAN_FLAGS := -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all
sanitize: setup-test
	mkdir -p $(SAN_BUILD)
	cmake -S . -B $(SAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$(SAN_FLAGS)" \
	  -DCMAKE_SHARED_LINKER_FLAGS="$(SAN_FLAGS)" \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" > $(SAN_BUILD).log 2>&1 \
	  || (cat $(SAN_BUILD).log; exit 1)
	cmake --build $(SAN_BUILD)
	LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  PST_OPS_LIB=$(CURDIR)/$(SAN_BUILD)/libpst_ops.so PST_FUZZ=$(FUZZ) \
	  $(PY) -m pytest -p no:cacheprovider tests/test_fuzz_ops.py tests/test_cluster.py tests/test_agglomerative.py \
	    tests/test_instances.py tests/test_morph.py $(PYTEST_ARGS)

# peers: PST_MEANSHIFTPP=DIR names the built published MeanShift++ (see pst/bench/peers.py)
bench: $(VENV)/.bench
	$(PY) benchmarks/bench_cluster.py
	$(PY) benchmarks/bench_morph.py
	$(PY) benchmarks/bench_peers.py
	$(PY) benchmarks/bench_contention.py

# For developers already in an environment with torch: rebuild pst._C in place
# (serialised, so parallel builds in one tree do not clobber each other).
build:
	flock /tmp/pst-build.lock $(PYTHON) setup.py -q build_ext --inplace

clean:
	rm -rf build $(VENV) pst/*.so *.egg-info
