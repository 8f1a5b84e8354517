# bigs: build, test and demo. `make` builds the binaries, `make test` runs every
# suite, `make demo` trains a tiny BiGS on the bundled corpus. See README.md.

CXX      ?= g++
NVCC     ?= nvcc
PYTHON   ?= /usr/bin/python3
CXXFLAGS ?= -O3 -march=native -std=c++17 -Wall -Wextra -fopenmp
# Hopper first; sm_80 is built in CI so Ampere keeps compiling.
CUDA_ARCH ?= sm_90
NVCCFLAGS ?= -O3 -std=c++17 -arch=$(CUDA_ARCH) -Xcompiler -Wall,-Wextra,-fopenmp,-march=native
CUDA_LIBS = -lcublasLt -lcublas -lcufft -lgomp
GTEST_LIBS = -lgtest -lgtest_main -pthread
BUILD    := build
# What bigs.cu includes from bigsc/ (and data_prep some of it).
BIGSC    := $(wildcard bigsc/*.h bigsc/*.cuh)

HAVE_NVCC := $(shell command -v $(NVCC) >/dev/null 2>&1 && echo yes)
# MPI (README "Data-parallel training"): with an MPI compiler wrapper on the
# PATH (Debian's libopenmpi-dev gives mpicxx), bigs is built with -DBIGS_MPI
# and runs as one rank under mpirun or srun; and where nvcc finds nccl.h (the
# CUDA Toolkit's), its GPUs exchange through NCCL (-DBIGS_NCCL). `make
# MPICXX=` builds without MPI. Without mpirun the binary runs as before.
MPICXX   ?= mpicxx
HAVE_MPI := $(if $(MPICXX),$(shell command -v $(MPICXX) >/dev/null 2>&1 && echo yes))
NVCC_HOME := $(abspath $(dir $(shell command -v $(NVCC) 2>/dev/null))..)
HAVE_NCCL := $(shell test -f $(NVCC_HOME)/include/nccl.h -o -f /usr/include/nccl.h && echo yes)
ifeq ($(HAVE_MPI),yes)
BIGS_CXX = $(MPICXX) -DBIGS_MPI
# nvcc gets MPI's headers and libraries from what the wrapper would add
# (`mpicxx -show`: Open MPI, MPICH, Intel MPI), so that NVCCFLAGS keeps its
# own -ccbin: -I, -L, -l, -D and -Xlinker X as they are, -Wl,a,b as
# -Xlinker a -Xlinker b, -pthread through -Xcompiler; the rest is dropped.
MPI_NVCC_FLAGS := $(shell $(MPICXX) -show 2>/dev/null | awk '{ \
  for (i = 2; i <= NF; i++) { \
    if ($$i ~ /^-[ILlD]/) printf " %s", $$i; \
    else if ($$i == "-Xlinker" && i < NF) printf " -Xlinker %s", $$(++i); \
    else if ($$i ~ /^-Wl,/) { n = split(substr($$i, 5), a, ","); for (j = 1; j <= n; j++) printf " -Xlinker %s", a[j] } \
    else if ($$i == "-pthread") printf " -Xcompiler -pthread" } }')
NVCC_MPI = $(MPI_NVCC_FLAGS) -DBIGS_MPI $(if $(HAVE_NCCL),-DBIGS_NCCL)
NCCL_LIBS = $(if $(HAVE_NCCL),-lnccl)
# The MPI build of the CPU trainer, which dev/test_mpi.py runs under mpirun.
MPI_TEST_BIN = $(BUILD)/bigs_mpi
else
BIGS_CXX = $(CXX)
endif

.PHONY: all test test-suites test-asan demo finetune-demo clean gpu-check gpu-check-prep gtest-src cuda-check format fuzz fuzz-build lab emu
all: bigs tokenizer data_prep

$(BUILD):
	mkdir -p $(BUILD)

# The tokenizer library, shared by tokenizer, data_prep and bigs.
$(BUILD)/tokenizer_lib.o: tokenizer.cpp tokenizer.h bigsc/unicode_tables.h | $(BUILD)
	$(CXX) $(CXXFLAGS) -DTOKENIZER_NO_MAIN -c tokenizer.cpp -o $@

tokenizer: tokenizer.cpp tokenizer.h bigsc/cli.h bigsc/unicode_tables.h
	$(CXX) $(CXXFLAGS) tokenizer.cpp -o $@ -pthread

data_prep: data_prep.cpp $(BIGSC) tokenizer.h $(BUILD)/tokenizer_lib.o
	$(CXX) $(CXXFLAGS) data_prep.cpp $(BUILD)/tokenizer_lib.o -o $@ -pthread

# bigs: with nvcc when it is on the PATH (CUDA + CPU paths), else CPU only;
# with MPI (and NCCL) where they are.
ifeq ($(HAVE_NVCC),yes)
bigs: bigs.cu $(BIGSC) tokenizer.h $(BUILD)/tokenizer_lib.o
	$(NVCC) $(NVCC_MPI) $(NVCCFLAGS) bigs.cu $(BUILD)/tokenizer_lib.o -o $@ $(CUDA_LIBS) $(NCCL_LIBS)
else
bigs: bigs.cu $(BIGSC) tokenizer.h $(BUILD)/tokenizer_lib.o
	$(BIGS_CXX) $(CXXFLAGS) -x c++ bigs.cu -x none $(BUILD)/tokenizer_lib.o -o $@
endif

# CPU-only build of the trainer, always with the host compiler, without MPI.
$(BUILD)/bigs_cpu: bigs.cu $(BIGSC) tokenizer.h $(BUILD)/tokenizer_lib.o
	$(CXX) $(CXXFLAGS) -x c++ bigs.cu -x none $(BUILD)/tokenizer_lib.o -o $@

# The CPU-only trainer with MPI, for the data-parallel tests (dev/test_mpi.py).
$(BUILD)/bigs_mpi: bigs.cu $(BIGSC) tokenizer.h $(BUILD)/tokenizer_lib.o
	$(MPICXX) -DBIGS_MPI $(CXXFLAGS) -x c++ bigs.cu -x none $(BUILD)/tokenizer_lib.o -o $@

# Test suites (GoogleTest). Each includes the file it tests.
$(BUILD)/test_model: test/test_model.cpp test/fixture.h bigs.cu $(BIGSC) $(BUILD)/tokenizer_lib.o
	$(CXX) $(CXXFLAGS) -I. test/test_model.cpp $(BUILD)/tokenizer_lib.o -o $@ $(GTEST_LIBS)

$(BUILD)/test_train: test/test_train.cpp test/fixture.h test/util.h bigs.cu $(BIGSC) $(BUILD)/tokenizer_lib.o
	$(CXX) $(CXXFLAGS) -I. test/test_train.cpp $(BUILD)/tokenizer_lib.o -o $@ $(GTEST_LIBS)

$(BUILD)/test_cpu_kernels: test/test_cpu_kernels.cpp bigs.cu $(BIGSC) $(BUILD)/tokenizer_lib.o
	$(CXX) $(CXXFLAGS) -I. test/test_cpu_kernels.cpp $(BUILD)/tokenizer_lib.o -o $@ $(GTEST_LIBS)

# Runs build/bigs_cpu and data_prep: kill -9, a full disk, two runs, bad data.
$(BUILD)/test_crash: test/test_crash.cpp test/util.h bigs.cu $(BIGSC) $(BUILD)/tokenizer_lib.o
	$(CXX) $(CXXFLAGS) -I. test/test_crash.cpp $(BUILD)/tokenizer_lib.o -o $@ $(GTEST_LIBS)

# (It also runs the tokenizer program: built first.)
$(BUILD)/test_tokenizer: test/test_tokenizer.cpp $(BUILD)/tokenizer_lib.o | tokenizer
	$(CXX) $(CXXFLAGS) -I. test/test_tokenizer.cpp $(BUILD)/tokenizer_lib.o -o $@ $(GTEST_LIBS)

# The kernel labs' index arithmetic and plans on the CPU (dev/cuda; no GPU needed).
LAB_SRC = dev/cuda/lab.h dev/cuda/ssm_conv.cu dev/cuda/colsum.cu
$(BUILD)/test_lab: test/test_lab.cpp $(LAB_SRC) bigs.cu $(BIGSC) $(BUILD)/tokenizer_lib.o
	$(CXX) $(CXXFLAGS) -I. test/test_lab.cpp $(BUILD)/tokenizer_lib.o -o $@ $(GTEST_LIBS)

$(BUILD)/test_data_prep: test/test_data_prep.cpp data_prep.cpp $(BIGSC) tokenizer.h $(BUILD)/tokenizer_lib.o
	$(CXX) $(CXXFLAGS) -I. test/test_data_prep.cpp $(BUILD)/tokenizer_lib.o -o $@ $(GTEST_LIBS)

# The GPU suite (nvcc only); it skips itself where no GPU is present.
# GTEST_FROM_SRC=1 links it against GoogleTest built from the source in
# build/googletest (`make gtest-src`), for a GPU machine that has none
# installed; dev/gpu_check.sh sets it there.
ifeq ($(HAVE_NVCC),yes)
ifdef GTEST_FROM_SRC
GTEST_NVCC = -isystem $(GTEST_SRC)/include -L$(BUILD)/gtest -lgtest_main -lgtest -lpthread
GTEST_DEPS = $(BUILD)/gtest/libgtest.a $(BUILD)/gtest/libgtest_main.a
else
GTEST_NVCC ?= -lgtest -lgtest_main -lpthread
endif
$(BUILD)/test_gpu: test/test_gpu.cu bigs.cu $(BIGSC) tokenizer.h $(BUILD)/tokenizer_lib.o $(GTEST_DEPS)
	$(NVCC) $(NVCCFLAGS) -I. test/test_gpu.cu $(BUILD)/tokenizer_lib.o -o $@ $(CUDA_LIBS) $(GTEST_NVCC)
GPU_TEST_BIN = $(BUILD)/test_gpu
endif
GTEST_SRC = $(BUILD)/googletest
GTEST_CXX = $(CXX) -O2 -std=c++17 -isystem $(GTEST_SRC)/include -I$(GTEST_SRC)
$(BUILD)/gtest/libgtest.a: | $(BUILD)
	mkdir -p $(BUILD)/gtest
	$(GTEST_CXX) -c $(GTEST_SRC)/src/gtest-all.cc -o $(BUILD)/gtest/gtest-all.o && ar rcs $@ $(BUILD)/gtest/gtest-all.o
$(BUILD)/gtest/libgtest_main.a: | $(BUILD)
	mkdir -p $(BUILD)/gtest
	$(GTEST_CXX) -c $(GTEST_SRC)/src/gtest_main.cc -o $(BUILD)/gtest/gtest_main.o && ar rcs $@ $(BUILD)/gtest/gtest_main.o

# The oracle's fixture: regenerated from dev/reference.py, never written by C++.
$(BUILD)/fixture.bin: dev/reference.py | $(BUILD)
	$(PYTHON) dev/reference.py --out $@

TEST_BINS = $(BUILD)/test_model $(BUILD)/test_cpu_kernels $(BUILD)/test_train $(BUILD)/test_tokenizer $(BUILD)/test_data_prep \
            $(BUILD)/test_crash $(BUILD)/test_lab $(BUILD)/bigs_cpu $(MPI_TEST_BIN) $(GPU_TEST_BIN)

$(BUILD)/metric_cases.tsv: dev/glue_metrics.py | $(BUILD)
	$(PYTHON) dev/glue_metrics.py cases --out $@

# `make test` first installs what the tests need and is missing (dev/deps.sh:
# as root it installs, otherwise it prints the command and stops).
test:
	@PYTHON=$(PYTHON) bash dev/deps.sh ensure
	@$(MAKE) --no-print-directory test-suites

test-suites: all $(TEST_BINS) $(BUILD)/fixture.bin $(BUILD)/metric_cases.tsv
	PYTHON=$(PYTHON) HAVE_MPI=$(HAVE_MPI) bash dev/run_tests.sh $(BUILD)

demo: all
	bash dev/demo.sh

# Compile-only checks of the CUDA path (CI has nvcc but no GPU): sm_90 and
# sm_80, with every warning (nvcc's and the host compiler's) an error; sm_90
# with MPI and NCCL where they are (as `make bigs` builds it), sm_80 without.
WERROR := -Werror all-warnings -Xcompiler -Werror
cuda-check: | $(BUILD)
	$(NVCC) $(NVCC_MPI) $(subst -arch=$(CUDA_ARCH),-arch=sm_90,$(NVCCFLAGS)) $(WERROR) -c bigs.cu -o $(BUILD)/bigs_sm90.o
	$(NVCC) $(subst -arch=$(CUDA_ARCH),-arch=sm_80,$(NVCCFLAGS)) $(WERROR) -c bigs.cu -o $(BUILD)/bigs_sm80.o
	$(NVCC) $(subst -arch=$(CUDA_ARCH),-arch=sm_90,$(NVCCFLAGS)) $(WERROR) -I. -c test/test_gpu.cu -o $(BUILD)/test_gpu_sm90.o
	$(NVCC) $(subst -arch=$(CUDA_ARCH),-arch=sm_80,$(NVCCFLAGS)) $(WERROR) -I. -c test/test_gpu.cu -o $(BUILD)/test_gpu_sm80.o
	for lab in ssm_conv colsum; do for a in sm_90 sm_80; do \
	  $(NVCC) $(subst -arch=$(CUDA_ARCH),-arch=$$a,$(NVCCFLAGS)) $(WERROR) -I. -c dev/cuda/$$lab.cu -o $(BUILD)/lab_$${lab}_$$a.o || exit 1; \
	done; done

# On the GPU machine: the one prepared check (dev/gpu_check.sh; logs packed
# into GPU_LOGS/gpu_logs.tgz beside GPU_LOGS/summary.txt). Here, before the
# device call: `make gpu-check-prep` copies GoogleTest's source for it,
# makes the oracle's fixture (the call carries both) and prints the call.
GPU_LOGS ?= $(BUILD)/gpu_logs
gpu-check:
	bash dev/gpu_check.sh $(GPU_LOGS)

gpu-check-prep: gtest-src $(BUILD)/fixture.bin
	bash dev/gpu_check.sh --dry-run $(BUILD)/gpu_dry_run

# The kernel labs (dev/cuda/README.md): a validator and a benchmark per hard
# kernel, for a GPU machine (`--predict` prints their cost model without one).
LAB_BINS = $(BUILD)/lab_ssm_conv $(BUILD)/lab_colsum
lab: $(LAB_BINS)
$(BUILD)/lab_%: dev/cuda/%.cu $(LAB_SRC) bigs.cu $(BIGSC) tokenizer.h $(BUILD)/tokenizer_lib.o
	$(NVCC) $(NVCCFLAGS) -I. $< $(BUILD)/tokenizer_lib.o -o $@ $(CUDA_LIBS)

# GoogleTest's source, for a GPU machine without it: the device call carries
# build/googletest and the Makefile builds it there (GTEST_FROM_SRC=1).
gtest-src: | $(BUILD)
	rm -rf $(BUILD)/googletest && cp -r /usr/src/googletest/googletest $(BUILD)/googletest

format:
	clang-format -i bigs.cu bigsc/*.h bigsc/*.cuh tokenizer.cpp tokenizer.h data_prep.cpp test/*.cpp test/*.h dev/cuda/*.cu dev/cuda/*.h

clean:
	rm -rf $(BUILD) bigs tokenizer data_prep

# The CPU suites again under AddressSanitizer and UndefinedBehaviorSanitizer.
ASAN_FLAGS = -O1 -g -std=c++17 -fopenmp -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
ASAN_BINS = $(BUILD)/asan/test_model $(BUILD)/asan/test_cpu_kernels $(BUILD)/asan/test_train $(BUILD)/asan/test_tokenizer \
            $(BUILD)/asan/test_data_prep $(BUILD)/asan/test_lab
$(BUILD)/asan/tokenizer_lib.o: tokenizer.cpp tokenizer.h bigsc/unicode_tables.h
	mkdir -p $(BUILD)/asan
	$(CXX) $(ASAN_FLAGS) -DTOKENIZER_NO_MAIN -c tokenizer.cpp -o $@
$(BUILD)/asan/test_lab: $(LAB_SRC)
$(BUILD)/asan/%: test/%.cpp $(BUILD)/asan/tokenizer_lib.o bigs.cu data_prep.cpp $(BIGSC) test/fixture.h test/util.h
	$(CXX) $(ASAN_FLAGS) -I. $< $(BUILD)/asan/tokenizer_lib.o -o $@ $(GTEST_LIBS)

test-asan: all $(ASAN_BINS) $(BUILD)/fixture.bin $(BUILD)/metric_cases.tsv
	set -e; for t in $(ASAN_BINS); do echo "=== $$t (ASan + UBSan)"; ASAN_OPTIONS=detect_leaks=1 $$t --gtest_brief=1; done
	$(if $(HAVE_EMU),echo "=== $(BUILD)/emu/test_gpu_asan (the emulated device, ASan + UBSan)" && \
	  ASAN_OPTIONS=detect_leaks=1 $(BUILD)/emu/test_gpu_asan --gtest_brief=1 --gtest_filter='$(EMU_ASAN_FILTER)')

# Fine-tune the `make demo` model on a real-text task in GLUE's layout (Old
# vs New Testament verses, dev/make_testament_task.sh), then eval and predict.
finetune-demo: all
	@test -f out/demo/run/model.bin || { echo "run 'make demo' first"; exit 1; }
	bash dev/make_testament_task.sh out/testament
	./data_prep glue --task sst2 --vocab out/demo/vocab.txt --seq 128 --data-dir out/testament --out out/testament/bin
	./bigs finetune --task sst2 --init out/demo/run/model.bin --train out/testament/bin/sst2_train.bin \
	  --dev out/testament/bin/sst2_dev.bin --epochs 3 --batch 32 --micro-batch 32 --lr 1e-3 --out out/testament/run --log-every 40 --overwrite
	./bigs eval --task sst2 --ckpt out/testament/run/best.bin --dev out/testament/bin/sst2_dev.bin
	./bigs predict --task sst2 --ckpt out/testament/run/best.bin --test out/testament/bin/sst2_test.bin --out out/testament/submission

# Fuzzing (README "Reliability"): libFuzzer harnesses in fuzz/, built with
# clang under ASan + UBSan, each run for FUZZ_SECONDS on its seed corpus
# fuzz/corpus/NAME (new inputs go to build/fuzz/corpus/NAME, crashes to
# build/fuzz/artifacts/). dev/fuzz.sh prints executions and coverage.
FUZZ_CXX ?= clang++
FUZZ_SECONDS ?= 60
FUZZ_SEED ?=
FUZZ_FLAGS = -O1 -g -std=c++17 -Wall -Wextra -Wno-unknown-pragmas -fno-omit-frame-pointer \
  -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CPP = tokenizer_encode vocab_load glue_tsv pretrain_text inspect bigs_shards bigs_task checkpoint config cli_numbers
FUZZ_PY = convert_msgpack convert_torch convert_safetensors
FUZZ_BINS = $(addprefix $(BUILD)/fuzz/,$(FUZZ_CPP))
$(BUILD)/fuzz/tokenizer_lib.o: tokenizer.cpp tokenizer.h bigsc/unicode_tables.h
	mkdir -p $(BUILD)/fuzz
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -DTOKENIZER_NO_MAIN -c tokenizer.cpp -o $@
$(BUILD)/fuzz/%: fuzz/%.cpp fuzz/fuzz.h $(BUILD)/fuzz/tokenizer_lib.o bigs.cu data_prep.cpp $(BIGSC) tokenizer.h
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer -I. $< $(BUILD)/fuzz/tokenizer_lib.o -o $@ -pthread
fuzz-build: $(FUZZ_BINS)
fuzz: fuzz-build
	FUZZ_SEED=$(FUZZ_SEED) PYTHON=$(PYTHON) bash dev/fuzz.sh $(FUZZ_SECONDS) $(BUILD)/fuzz $(FUZZ_CPP) $(FUZZ_PY)

# The emulated CUDA device (test/emu, docs/TESTS.md): the same bigs.cu and
# test/test_gpu.cu, compiled by g++ with -DBIGS_EMU against an emulation of
# the CUDA runtime (test/emu/runtime.cpp), cuBLASLt, cuFFT and NCCL over MPI,
# run the GPU suites and whole GPU training runs on the CPU. Test
# infrastructure only: nothing here is linked into the product. It needs the
# CUDA Toolkit's headers (not nvcc, not a GPU).
EMU_INC ?= $(patsubst %/,%,$(dir $(firstword $(wildcard $(NVCC_HOME)/include/cuda_runtime_api.h \
             /usr/local/cuda/include/cuda_runtime_api.h))))
HAVE_EMU := $(if $(EMU_INC),yes)
EMU_FLAGS = -O2 -g -std=c++17 -Wall -Wextra -I$(EMU_INC)
EMU_ASAN = -fsanitize=address -fno-omit-frame-pointer
EMU_HDRS = test/emu/cuda_emu.h test/emu/emu.h
EMU_OBJS = $(BUILD)/emu/runtime.o $(BUILD)/emu/cublaslt.o $(BUILD)/emu/cufft.o
EMU_MPIRUN ?= mpirun --allow-run-as-root --oversubscribe --bind-to none
$(BUILD)/emu/%.o: test/emu/%.cpp $(EMU_HDRS)
	mkdir -p $(BUILD)/emu
	$(CXX) $(EMU_FLAGS) -c $< -o $@
$(BUILD)/emu/runtime_asan.o: test/emu/runtime.cpp $(EMU_HDRS)
	mkdir -p $(BUILD)/emu
	$(CXX) $(EMU_FLAGS) $(EMU_ASAN) -c $< -o $@
$(BUILD)/emu/nccl.o: test/emu/nccl.cpp $(EMU_HDRS)
	mkdir -p $(BUILD)/emu
	$(MPICXX) $(EMU_FLAGS) -DBIGS_MPI -c $< -o $@
# The emulator's own tests: its rules with planted bugs (test_emu, also under
# ASan, and its NCCL under mpirun -np 2), cuBLASLt and cuFFT against numpy
# (test_emu_libs writes inputs and results, dev/test_emu_libs.py checks them).
$(BUILD)/emu/test_emu: test/test_emu.cpp $(EMU_HDRS) $(BUILD)/emu/runtime.o
	$(CXX) $(EMU_FLAGS) -Itest -rdynamic test/test_emu.cpp $(BUILD)/emu/runtime.o -o $@ $(GTEST_LIBS)
$(BUILD)/emu/test_emu_asan: test/test_emu.cpp $(EMU_HDRS) $(BUILD)/emu/runtime_asan.o
	$(CXX) $(EMU_FLAGS) $(EMU_ASAN) -Itest -rdynamic test/test_emu.cpp $(BUILD)/emu/runtime_asan.o -o $@ $(GTEST_LIBS)
$(BUILD)/emu/test_emu_nccl: test/test_emu.cpp $(EMU_HDRS) $(BUILD)/emu/runtime.o $(BUILD)/emu/nccl.o
	$(MPICXX) $(EMU_FLAGS) -DBIGS_MPI -DEMU_TEST_NCCL -Itest -rdynamic test/test_emu.cpp $(BUILD)/emu/runtime.o \
	  $(BUILD)/emu/nccl.o -o $@ -lgtest -pthread
$(BUILD)/emu/test_emu_libs: test/test_emu_libs.cpp $(EMU_HDRS) $(EMU_OBJS)
	$(CXX) $(EMU_FLAGS) -Itest test/test_emu_libs.cpp $(EMU_OBJS) -o $@ $(GTEST_LIBS) -ldl
# bigs on the emulated device: the GPU suite, the trainer (--device cuda runs
# on the emulator) and, with MPI, the trainer with the emulated NCCL.
# -fno-strict-aliasing: the kernels' 16-byte stores pun through uint4, which
# nvcc allows and g++'s aliasing rules do not.
EMU_BIGS_FLAGS = $(EMU_FLAGS) -march=native -fopenmp -fno-strict-aliasing -rdynamic -DBIGS_EMU -I. -Itest
$(BUILD)/emu/test_gpu: test/test_gpu.cu test/fixture.h bigs.cu $(BIGSC) $(EMU_HDRS) $(EMU_OBJS) $(BUILD)/tokenizer_lib.o
	$(CXX) $(EMU_BIGS_FLAGS) -x c++ test/test_gpu.cu -x none $(BUILD)/tokenizer_lib.o $(EMU_OBJS) -o $@ $(GTEST_LIBS)
$(BUILD)/emu/bigs: bigs.cu $(BIGSC) tokenizer.h $(EMU_HDRS) $(EMU_OBJS) $(BUILD)/tokenizer_lib.o
	$(CXX) $(EMU_BIGS_FLAGS) -x c++ bigs.cu -x none $(BUILD)/tokenizer_lib.o $(EMU_OBJS) -o $@
$(BUILD)/emu/bigs_mpi: bigs.cu $(BIGSC) tokenizer.h $(EMU_HDRS) $(EMU_OBJS) $(BUILD)/emu/nccl.o $(BUILD)/tokenizer_lib.o
	$(MPICXX) $(EMU_BIGS_FLAGS) -DBIGS_MPI -DBIGS_NCCL -x c++ bigs.cu -x none $(BUILD)/tokenizer_lib.o $(EMU_OBJS) \
	  $(BUILD)/emu/nccl.o -o $@
EMU_BINS = $(if $(HAVE_EMU),$(BUILD)/emu/test_emu $(BUILD)/emu/test_emu_asan $(BUILD)/emu/test_emu_libs \
             $(BUILD)/emu/test_gpu $(BUILD)/emu/bigs $(if $(HAVE_MPI),$(BUILD)/emu/test_emu_nccl $(BUILD)/emu/bigs_mpi))
# The GPU suite's kernels and the fp32 model on the emulated device under
# ASan + UBSan (make test-asan): each cudaMalloc is its own allocation, so a
# kernel that reads or writes past a buffer is caught where it does. The
# fifty-step runs are left to make test (ASan's fiber switches are slow).
$(BUILD)/emu/test_gpu_asan: test/test_gpu.cu test/fixture.h bigs.cu $(BIGSC) $(EMU_HDRS) $(BUILD)/emu/runtime_asan.o \
  $(BUILD)/emu/cublaslt.o $(BUILD)/emu/cufft.o $(BUILD)/asan/tokenizer_lib.o
	$(CXX) $(ASAN_FLAGS) -I$(EMU_INC) -march=native -fno-strict-aliasing -rdynamic -DBIGS_EMU -I. -Itest -x c++ \
	  test/test_gpu.cu -x none $(BUILD)/asan/tokenizer_lib.o $(BUILD)/emu/runtime_asan.o $(BUILD)/emu/cublaslt.o \
	  $(BUILD)/emu/cufft.o -o $@ $(GTEST_LIBS)
EMU_ASAN_FILTER = GpuKernel.*:GpuModel.*AgainstTheOracle*
emu: $(EMU_BINS)
# make test runs them (dev/run_tests.sh); a prerequisite named here, after
# EMU_BINS is defined (make expands a rule's prerequisites as it reads it).
test-suites: $(EMU_BINS)
test-asan: $(if $(HAVE_EMU),$(BUILD)/emu/test_gpu_asan)
