# Two commands for a newcomer:  `make run`  and  `make test`.
# Everything else is installed into ./.venv from uv.lock (uv itself into ./.uv).

PYTHON ?= python3
UV := .uv/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
# Bytecode written once at install: where PYTHONDONTWRITEBYTECODE is set (this machine and
# CI), every interpreter otherwise compiled pydicom, SQLAlchemy, FastAPI and ours from source
# again: ~3 s more CPU for each `cloudfilm serve`, worker or test process to start.
export UV_COMPILE_BYTECODE := 1

.PHONY: run test install lint bench bench-quick clean

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet "uv>=0.5"

install: $(UV)
	$(UV) sync --frozen --all-extras --quiet
	$(VENV)/bin/python -m compileall -q src/cloudfilm
	# The web pages' assets (htmx, the phone viewer, the stylesheet; axe-core for tests):
	# exact versions from web/package-lock.json, built by Vite into the Python package.
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent

## Start the platform on the embedded default (SQLite + ./cloudfilm-data), with demo data:
## the demo province is loaded over C-STORE and STOW-RS first (a rerun adds nothing).
run: install
	$(VENV)/bin/cloudfilm demo --size small --data cloudfilm-data --gateway
	@echo "cloudfilm: look at http://127.0.0.1:8042/dicomweb/studies?limit=20 and /docs (Ctrl-C stops)"
	@echo "cloudfilm: patients' portal at http://127.0.0.1:8042/portal (sign-in codes: .venv/bin/cloudfilm sms outbox --data cloudfilm-data)"
	@echo "cloudfilm: doctor's workstation at http://127.0.0.1:8042/workstation: doctor.a / demo-doctor-2024 and doctor.b / demo-doctor-2024 (two hospitals; the patient to find is printed above)"
	@echo "cloudfilm: the commission's dashboard at http://127.0.0.1:8042/dashboard: user commission (province) or hangzhou-bureau (杭州), password cloudfilm-demo-2026"
	@echo "cloudfilm: operators' pages at http://127.0.0.1:8042/admin (recognition rules and figures): demo.admin / cloudfilm-demo-admin"
	@echo "cloudfilm: a hospital gateway runs beside it (status http://127.0.0.1:8043/, heartbeats at /api/v1/gateway/heartbeats)"
	$(VENV)/bin/cloudfilm gateway run cloudfilm-data/gateway/gateway.toml & gw=$$!; \
	  trap 'kill $$gw 2>/dev/null' EXIT INT TERM; \
	  $(VENV)/bin/cloudfilm serve --data cloudfilm-data

## The whole test suite: lint, layers, types (mypy), unit, integration (SQLite and PostgreSQL), interop.
test: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -n 2 --dist loadgroup tests

## Lint alone: ruff's rules, the import layers and types (what `make test` checks first).
## The code is not run through `ruff format` (hand-aligned continuation lines are kept).
lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

bench: install
	$(VENV)/bin/python bench/dicomweb_bench.py

bench-quick: install
	$(VENV)/bin/python bench/dicomweb_bench.py --quick

clean:
	rm -rf $(VENV) .uv .pytest_cache .ruff_cache .mypy_cache
