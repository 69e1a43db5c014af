# One entry point for people and CI. Every target that needs Python packages
# creates .venv on first use and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PROTO_OUT := clients/python
PYTEST_ARGS ?=
DIST ?= dist

.PHONY: serve test unit integration protos protos-check lint bench dist clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[server,dev,otel]"
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/dbgateway serve $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

protos: $(STAMP)
	rm -f $(PROTO_OUT)/dbgateway/v1/*_pb2*.py $(PROTO_OUT)/dbgateway/v1/*_pb2*.pyi
	$(BIN)/python -m grpc_tools.protoc -I protos \
		--python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		protos/dbgateway/v1/*.proto

# Fails when the committed generated code differs from what `make protos` writes.
protos-check: protos
	git diff --exit-code --stat -- $(PROTO_OUT)/dbgateway/v1
	test -z "$$(git status --porcelain -- $(PROTO_OUT)/dbgateway/v1)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# The wheel service authors install into their own environment: the client
# library and the `dbgateway` command, without the server's database drivers
# (those come with the [server] extra).
dist: $(STAMP)
	rm -f $(DIST)/dbgateway-*.whl
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(DIST) .
	@ls $(DIST)/dbgateway-*.whl

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(DIST) build
