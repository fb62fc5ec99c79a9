# make demo | make test | make bench — each creates .venv with the pinned set when it is
# missing or when pyproject.toml (the dependency spec) changed since it was built.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SPEC   := $(shell sha256sum pyproject.toml | cut -c1-16)
STAMP  := $(VENV)/.installed-$(SPEC)
DEMO_OUT ?= demo_run

.PHONY: venv demo test test-slow bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/rn-classifier demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	@for f in benchmarks/*.py; do echo "== $$f"; \
	  if grep -q -- '"--record"' $$f; then $(BIN)/python $$f --record || exit 1; \
	  else out=$$($(BIN)/python $$f) || exit 1; echo "$$out"; \
	    printf '\n## %s — %s (printed figures, recorded by make bench)\n\n- machine:%s, %s cores, %s\n\n```\n%s\n```\n' \
	      "$$(date -u '+%Y-%m-%d %H:%M')" "$${f#benchmarks/}" "$$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" \
	      "$$(nproc)" "$$(uname -sm)" "$$out" >> benchmarks/RESULTS.md; fi; done

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
