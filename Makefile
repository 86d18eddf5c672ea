# Private AI course — `make lab` to learn, `make test` to check everything.
# Both create .venv (if missing) and install requirements.txt + course_lib on first use.

# Python 3.11–3.13 (pyproject.toml's requires-python; 3.11 is what CI uses).
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
# The learner's own copies of the lessons (student edition; git-ignored, never overwritten).
STUDENT_DIR ?= student
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# Tests and stored outputs run torch on one thread: the lessons' small models are faster that way
# on a busy 2-core machine, and float results do not depend on the machine's core count.
RUN    := COURSE_OFFLINE=1 OMP_NUM_THREADS=1
# The Python files ruff format must leave unchanged (the notebooks are formatted by hand).
FORMATTED := conftest.py course_lib tests benchmarks tools

# Checked outputs must hold on any CPU. make test runs the session (so nbval's run of every lesson)
# under a second CPU setting, oneDNN without AVX and ATen's portable kernels, which takes other
# kernels than the machine's own on any x86 machine; the student editions then run on the machine's
# own kernels and compare the checked cells they share (tests/lessons/test_student_edition.py).
# CPU=native swaps the two.
CPU    ?= second
SECOND_CPU := ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default
# pytest-xdist workers for make test / test-fast (CI has 2 cores; JOBS=1 runs in this process).
JOBS   ?= 2
# One pytest session, JOBS workers; conftest.py puts a notebook's cells (one kernel), a file's tests
# (its module-scoped fixtures) and the process-heavy files (one at a time) each on one worker.
PYTEST := $(RUN) $(BIN)/python -m pytest $(if $(filter-out 1,$(JOBS)),-n $(JOBS) --dist loadgroup)
# Runs a step and prints its wall time: $(call timed,NAME,COMMAND)
timed   = start=$$(date +%s); $(2); status=$$?; echo "== $(1): $$(( $$(date +%s) - start )) s"; exit $$status

.PHONY: install lab lab-solutions test test-fast test-py313 typecheck execute student grade publish-student site site-instructor lint clean federation gpu-check

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' || \
	  { echo "The course needs Python 3.11, 3.12 or 3.13; $(PYTHON) is not one (set PYTHON=...)."; exit 1; }
	$(if $(filter-out cpu,$(TORCH)),$(error TORCH can be cpu or left out, got '$(TORCH)'))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH),$(BIN)/python -m pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	$(BIN)/python -m ipykernel install --user --name private-ai --display-name "Python (Private AI)"
	touch $(STAMP)

## A CPU-only Linux machine: make install TORCH=cpu (or make lab TORCH=cpu) on a fresh clone takes
## PyTorch's CPU wheels from pytorch.org instead of PyPI's, which bundle CUDA (see INSTALLATION.md).
install: $(STAMP)

## Learners: your own copies of the lessons (student edition) in student/notebooks/, in JupyterLab.
## As root (Docker, WSL, a cloud VM) JupyterLab needs --allow-root, added here; more options for
## it: make lab LAB_ARGS="--ip=0.0.0.0 --no-browser" (a container's JupyterLab seen from outside).
lab: student
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root) $(LAB_ARGS) $(STUDENT_DIR)/notebooks/

## Instructors: the solved notebooks with their outputs (notebooks/).
lab-solutions: install
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root) $(LAB_ARGS) notebooks/

## Everything CI checks: ruff, mypy, then one pytest session (offline) with the unit tests, every
## lesson re-run by nbval, the student editions and course_lib's docstring examples.
test: install
	$(call timed,lint,$(BIN)/ruff check . && $(BIN)/ruff format --check $(FORMATTED))
	$(call timed,typecheck,$(BIN)/mypy)
	$(call timed,pytest,$(if $(filter second,$(CPU)),$(SECOND_CPU)) $(PYTEST) --durations=0)

## Developers' loop (a few minutes): ruff, mypy, the unit tests and docstring examples; no lesson,
## no test that starts processes or takes over 10 s (markers: notebook, processes, slow).
test-fast: install
	$(call timed,lint,$(BIN)/ruff check . && $(BIN)/ruff format --check $(FORMATTED))
	$(call timed,typecheck,$(BIN)/mypy)
	$(call timed,pytest,$(PYTEST) -q -m "not notebook and not processes and not slow" tests course_lib)

## Python 3.13 (Colab's default) with Colab's own IPython 7.34.0 / ipykernel 6.17.1: the unit tests
## of make test-fast and lessons 00 01 05 08 15 18, in a venv of its own outside the clone, built once
## (about 16 min and 6.5 GB: PyPI's torch for Linux brings CUDA) and then reused. .ci/run runs it
## when that venv exists.
PY313      ?= $(firstword $(wildcard /usr/bin/python3.13 /usr/local/bin/python3.13 $(HOME)/.pyenv/versions/3.13*/bin/python3.13))
PY313_VENV ?= /var/cache/private-ai/py313
PY313_LESSONS := 00_welcome 01_tensors 05_local_dp_randomized_response 08_dp_sgd 15_secret_sharing 18_homomorphic_encryption
test-py313:
	@test -n "$(PY313)" || { echo "test-py313: no python3.13 found (set PY313=...)"; exit 1; }
	test -x $(PY313_VENV)/bin/python || $(PY313) -m venv $(PY313_VENV)
	grep -v '^ipykernel' requirements.txt > $(PY313_VENV)/requirements-colab.txt
	$(PY313_VENV)/bin/python -m pip install -q -r $(PY313_VENV)/requirements-colab.txt ipython==7.34.0 ipykernel==6.17.1
	$(PY313_VENV)/bin/python -m pip install -q --no-deps -e .
	$(call timed,py313-lessons,$(RUN) $(PY313_VENV)/bin/python -m pytest -n $(JOBS) --dist loadgroup -q $(PY313_LESSONS:%=notebooks/%.ipynb))
	$(call timed,py313-unit,$(RUN) $(PY313_VENV)/bin/python -m pytest -n $(JOBS) --dist loadgroup -q -m "not notebook and not processes and not slow" tests course_lib)

## Static types of course_lib and tools (settings: pyproject.toml [tool.mypy]).
typecheck: install
	$(BIN)/mypy

## The course's Flower App (flower_app/) on Flower's Deployment Engine: a SuperLink and NODES
## SuperNodes as processes on 127.0.0.1, all stopped afterwards. make federation NODES=3 ROUNDS=5
## TLS=1 serves the SuperLink over TLS (a throw-away CA, as flower_app/README.md describes).
## Across machines: make federation SUPERLINK=10.0.0.1:9093 CA=tls/ca.crt [NODES=2 ROUNDS=2] runs
## the app on that SuperLink (always TLS) and its NODES SuperNodes, started beforehand with
## python -m course_lib.fl.deployment superlink / supernode (flower_app/README.md, two laptops).
# (checked when the Makefile is read, so nothing is installed or started first)
federation: $(if $(and $(filter federation,$(MAKECMDGOALS)),$(SUPERLINK)),$(if $(CA),,$(error make federation SUPERLINK=... needs CA=path/to/ca.crt, the federation's CA certificate))) install
	$(RUN) $(BIN)/python -m $(if $(SUPERLINK),course_lib.fl.deployment run --superlink $(SUPERLINK) --ca $(CA),course_lib.fl.flower --runtime deployment) --nodes $(or $(NODES),2) --rounds $(or $(ROUNDS),2) $(if $(SUPERLINK),,$(if $(filter 1,$(TLS)),--tls))

## Does the course work on this machine's CUDA GPU? The tests' CUDA cases, a short DP-SGD and a
## short FedAvg training on cuda, in a table. Exit 0: all passed; 1: a check failed; 2: no CUDA here.
gpu-check: install
	COURSE_OFFLINE=1 $(BIN)/python -m tools.gpu_check

## Re-execute every lesson in place (refreshes the stored outputs; run before committing a lesson).
execute: install
	cd notebooks && for nb in $(notdir $(NOTEBOOKS)); do \
	  echo "== $$nb"; $(RUN) ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=900 $$nb || exit 1; done

## Create the missing student notebooks in $(STUDENT_DIR)/notebooks/ (solutions stubbed, outputs
## cleared); notebooks you edited are kept. Replace one explicitly (backup kept): make student REFRESH=05
student: install
	$(BIN)/python -m tools.student_edition --out $(STUDENT_DIR) $(if $(REFRESH),--refresh $(REFRESH))

## Instructors: grade a folder of submitted notebooks (STUDENT.ipynb each) into a CSV and feedback
## files: make grade SUBMISSIONS=path/to/folder [OUT=grades.csv] [ARGS="--lesson 05 --jobs 8"]
grade: install
	$(RUN) $(BIN)/python -m tools.grade $(SUBMISSIONS) --out $(or $(OUT),grades.csv) $(ARGS)

## Instructors: commit the student edition of HEAD to the student branch, then `git push origin student`.
publish-student: install
	$(BIN)/python -m tools.student_edition --publish

## The course website from the stored outputs (nothing re-run): the student edition in
## build/site/student/, the instructor edition (solutions shown) in build/site/instructor/.
site: install
	$(BIN)/python -m tools.site --edition student

site-instructor: install
	$(BIN)/python -m tools.site --edition instructor

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check $(FORMATTED)

clean:
	rm -rf build .pytest_cache .ruff_cache .mypy_cache
