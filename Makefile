# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv on first use. torch is installed first from the machine's local CPU
# wheel; constraints.txt then pins it so no later step can pull a CUDA build.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= data
PYTEST_ARGS ?=
# MTCNN's weights (MIT) ship in this wheel; installed without its dependencies, which pin an
# old torch and numpy (docs/faces.md). Nothing imports the package.
MTCNN_WEIGHTS := facenet-pytorch==2.6.0

.PHONY: install demo test test-fast lint typecheck docs browser clean gpu-wheels

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade "pip>=24" "setuptools>=68"
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e ".[dev]"
	$(BIN)/pip install --disable-pip-version-check -q --no-deps $(MTCNN_WEIGHTS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/clef demo --data-dir $(DATA)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Headless Chromium for the MLflow UI screenshot test (Debian's package, best effort: without
# it that one check is skipped and says so).
browser:
	@command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	     --no-install-recommends chromium-headless-shell >/dev/null) ; } || \
	  echo "note: no headless Chromium; the MLflow UI screenshot check will be skipped"

# The documentation site (mkdocs.yml, docs/): strict, so a broken link, a page missing from the
# nav or a CLI reference that no longer builds (docs/hooks/cli_reference.py) fails it.
# NO_MKDOCS_2_WARNING: Material's banner (it reaches end of life on May 5, 2027; Zensical
# is its successor) would print on every build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# --durations: the slowest tests at the end of every run, to keep the suite under CI's 25 min.
test: lint typecheck docs browser
	$(BIN)/python -m pytest --durations=30 $(PYTEST_ARGS)

# For development: lint, types and the tests that start no service (no Ray instance, no
# Prefect/MLflow server) and train nothing long: `slow` and `server` tests are left out.
test-fast: lint typecheck
	$(BIN)/python -m pytest -m "not slow and not server" $(PYTEST_ARGS)

# What a GPU machine of the device tool lacks for bench/gpu_check.sh (it has Python 3.12 with
# CUDA torch, numpy, pyarrow, OpenCV, timm, PyYAML, pytest), as wheels in .whl/ to carry there.
GPU_WHEELS := open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 pydantic==2.14.4 \
              pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
              typing-extensions==4.16.0
gpu-wheels: $(STAMP)
	$(BIN)/pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
	  --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
