# Private AI course — `make lab` to learn, `make test` to check everything.
# Both create .venv (if missing) and install requirements.txt + course_lib on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# Tests and stored outputs run torch on one thread: the lessons' small models are faster that way
# on a busy 2-core machine, and float results do not depend on the machine's core count.
RUN    := COURSE_OFFLINE=1 OMP_NUM_THREADS=1

.PHONY: install lab test execute student site lint clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	$(BIN)/python -m ipykernel install --user --name private-ai --display-name "Python (Private AI)"
	touch $(STAMP)

install: $(STAMP)

## Open JupyterLab on the lessons.
lab: install
	$(BIN)/jupyter lab notebooks/

## Unit tests + every notebook re-run by nbval (offline), then ruff.
test: install
	$(RUN) $(BIN)/python -m pytest --durations=0
	$(BIN)/ruff check .
	$(BIN)/ruff format --check course_lib tests benchmarks tools

## Re-execute every lesson in place (refreshes the stored outputs; run before committing a lesson).
execute: install
	cd notebooks && for nb in $(notdir $(NOTEBOOKS)); do \
	  echo "== $$nb"; $(RUN) ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=900 $$nb || exit 1; done

## Write the student edition (solutions stubbed, outputs cleared) to build/student/.
student: install
	$(BIN)/python -m tools.student_edition

## Write every lesson as a web page (stored outputs, not re-run) plus an index to build/site/.
site: install
	$(BIN)/python -m course_lib.site

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check course_lib tests benchmarks tools

clean:
	rm -rf build .pytest_cache .ruff_cache
