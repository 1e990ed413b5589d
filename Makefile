# Two entry points: `make run` and `make test` (ruff, mypy, then pytest). Both build .venv once
# (re-built when pyproject.toml or constraints.txt change) with the interpreter's venv + pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test clean mutation

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,mujoco,video,report,sweep]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rltui

test: $(STAMP)
	$(BIN)/ruff check agents rltui tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# Mutation testing of agents/ and the engine's batch assembly (replay, rollout) against their fast
# unit tests; not part of `make test` (about 10 minutes with one worker on 2 cores). What is mutated,
# which tests run and what is copied along is configured in one place: [tool.mutmut] in pyproject.toml. Every run starts afresh (mutmut's
# cached verdicts can outlive a changed test). A subset: make mutation MUTANTS='agents.trpo*'.
MUTANTS        ?=
MUTATION_JOBS  ?= 1
MUTATION_STAMP := $(VENV)/.installed-mutation

$(MUTATION_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[mutation]'
	touch $(MUTATION_STAMP)

mutation: $(MUTATION_STAMP)
	rm -rf mutants
	mkdir -p mutants
	$(BIN)/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS) > mutants/run.log 2>&1 \
		|| { tail -c 4000 mutants/run.log; exit 1; }
	$(BIN)/mutmut results
	$(BIN)/mutmut export-cicd-stats > /dev/null
	$(BIN)/python -c "import json; s = json.load(open('mutants/mutmut-cicd-stats.json')); \
		caught = s['killed'] + s['timeout']; \
		tested = caught + s['survived'] + s['no_tests'] + s['suspicious'] + s['segfault']; \
		print(f'mutation score: {caught}/{tested} killed = {100 * caught / max(tested, 1):.1f}%', \
		f\"({s['survived']} survived, {s['no_tests']} without tests, {s['suspicious']} suspicious)\")"

clean:
	rm -rf $(VENV)
