"""Migrations on both databases: upgrade from empty, and no drift between models and schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect

from cloudfilm.infrastructure.db import migrate
from cloudfilm.infrastructure.db.models import Base


def test_upgrade_is_complete_and_has_no_drift(db_url: str) -> None:
    migrate.upgrade(db_url)  # already at head: a no-op that must not fail
    migrate.check(db_url)  # raises when models and schema differ (alembic check)
    engine = create_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables


def test_import_layers_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and " 0 broken" in result.stdout, result.stdout[-2000:]
