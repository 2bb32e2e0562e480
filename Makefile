# The two commands: `make demo` (the main job on examples/) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO := runs/demo

.PHONY: install system-deps demo test test-slow docs tiny screenshots clean

# constraints.txt: the exact versions of development and CI (the package itself declares ranges only)
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip install -q -c constraints.txt -e '.[dev,ray,ui,llamacpp]'
	touch $@

# Tesseract with Korean (offline Korean OCR) and a Hangul font (labels on annotated images, Korean in trace pages),
# and Chromium (the test that renders `vqa trace show --html` headless), Debian/Ubuntu.
system-deps:
	@if ! (command -v tesseract >/dev/null && tesseract --list-langs 2>/dev/null | grep -qx kor \
	      && [ -f /usr/share/fonts/truetype/nanum/NanumGothic.ttf ] && command -v chromium >/dev/null); then \
	  echo "installing tesseract-ocr (kor, eng), fonts-nanum and chromium with apt"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq tesseract-ocr tesseract-ocr-kor tesseract-ocr-eng fonts-nanum \
	    chromium >/dev/null; \
	fi

install: system-deps $(VENV)/.installed

demo: install
	rm -rf $(DEMO)
	$(BIN)/vqa route "간판에 적힌 가게 이름은?" --json
	$(BIN)/vqa batch examples/test.csv --images examples --out $(DEMO)/submission.csv --run-dir $(DEMO) \
	  --reasoner evidence --show
	@echo "--- $(DEMO)/submission.csv"; cat $(DEMO)/submission.csv

# make test: ruff, every test not marked slow, and the strict docs build (a few minutes); make test-slow: the tests
# marked slow (real OCR and e5 weights, training, Ray, several vqa processes each). CI (.ci/run) runs both.
test: install
	$(BIN)/ruff check agent tools eval prompts tests examples
	$(BIN)/python -m pytest -q -n 2 -m "not slow"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test-slow: install
	$(BIN)/python -m pytest -q -n 2 -m slow

# The documentation site (docs/, mkdocs.yml) into site/, every warning an error; the reference pages are generated
# from the code on every build (agent/cli/docs.py). `$(BIN)/mkdocs serve` previews it.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# A picture of each tab of `vqa ui` (evidence reasoner, offline) in docs/screenshots/, taken in the system Chromium.
screenshots: install
	$(BIN)/python -m agent.dev.screenshots docs/screenshots

tiny: install
	$(BIN)/vqa dev make-tiny .tiny

clean:
	rm -rf runs .tiny .pytest_cache site
