"""the dashboard at province scale (issue 17): monthly rollups, area units, indexes by unit

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-04 03:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "stats_study_month",
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("hospital_id", sa.BigInteger(), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("studies", sa.Integer(), nullable=False),
        sa.Column("instances", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("on_time", sa.Integer(), nullable=False),
        sa.Column("late", sa.Integer(), nullable=False),
        sa.Column("undated", sa.Integer(), nullable=False),
        sa.Column("delay_sum_s", sa.Float(), nullable=False),
        sa.Column("delay_max_s", sa.Float(), nullable=False),
        sa.Column("no_report_24h", sa.Integer(), nullable=False),
        sa.Column("no_report_72h", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("month", "hospital_id", "modality",
                                name="pk_stats_study_month"))
    op.create_table(
        "stats_report_month",
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("hospital_id", sa.BigInteger(), nullable=False),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("on_time", sa.Integer(), nullable=False),
        sa.Column("late", sa.Integer(), nullable=False),
        sa.Column("without_images", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("month", "hospital_id", name="pk_stats_report_month"))
    op.create_table(
        "stats_area",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(130), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stats_area"),
        sa.UniqueConstraint("name", name="uq_stats_area_name"))
    # A unit's (hospital, area, province) series: an index range, not a scan of every
    # hospital's rows of the period.
    for table, column in (("stats_study_day", "day"), ("stats_report_day", "day"),
                          ("stats_study_month", "month"), ("stats_report_month", "month")):
        op.create_index(f"ix_{table}_hospital_id_{column}", table, ["hospital_id", column])
    # Every hospital's totals (modality "*") of a period, for a ranking: one index range.
    op.create_index("ix_stats_study_day_modality_day", "stats_study_day", ["modality", "day"])
    # Days rolled before areas and months existed: forgetting the watermarks makes the
    # next run of the job recompute every day (and so every month and area) from the start.
    op.execute("DELETE FROM stats_watermark")


def downgrade() -> None:
    op.drop_index("ix_stats_study_day_modality_day", table_name="stats_study_day")
    for table, column in (("stats_study_day", "day"), ("stats_report_day", "day"),
                          ("stats_study_month", "month"), ("stats_report_month", "month")):
        op.drop_index(f"ix_{table}_hospital_id_{column}", table_name=table)
    for name in ("stats_area", "stats_report_month", "stats_study_month"):
        op.drop_table(name)
