"""the dashboard at 10 M studies (issue 17): a unit's days read from the index alone

A province's or a bureau's figure by day over a year (``volume``, ``trend``) reads its
unit's ~2,500 day rows through ``(hospital_id, day)``; each day's rows are written
together, every unit's beside every hospital's, so those rows sit on ~800 heap pages
(35-40 ms at 10 M studies, and a page read each when the table is not cached). On
PostgreSQL the index now carries the figures (``INCLUDE``): an index-only scan of a few
dozen pages. SQLite keeps its index as it is (no ``INCLUDE``).

Revision ID: 0032_dash17
Revises: 0031_dash10m_month_modality
Create Date: 2026-12-04 14:05:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0032_dash17"
down_revision = "0031_dash10m_month_modality"
branch_labels = None
depends_on = None

STUDY = ["modality", "studies", "instances", "bytes", "on_time", "late", "undated",
         "delay_sum_s", "delay_max_s", "no_report_24h", "no_report_72h"]
REPORT = ["reports", "on_time", "late", "without_images"]


def _rebuild(table: str, include: list[str]) -> None:
    name = f"ix_{table}_hospital_id_day"
    op.drop_index(name, table_name=table)
    op.create_index(name, table, ["hospital_id", "day"], postgresql_include=include)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _rebuild("stats_study_day", STUDY)
    _rebuild("stats_report_day", REPORT)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _rebuild("stats_study_day", [])
    _rebuild("stats_report_day", [])
