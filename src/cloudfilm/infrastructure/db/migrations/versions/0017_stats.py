"""the commission's dashboard (issue 17): daily rollups, watermarks, alerts; hospitals'
public flag and alert contacts; a health bureau account's area

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03 23:00:00.000000
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def _day_table(name: str, keys: list[sa.Column[Any]], values: list[sa.Column[Any]]) -> None:
    op.create_table(name, *keys, *values,
                    sa.PrimaryKeyConstraint(*[k.name for k in keys], name=f"pk_{name}"))


def upgrade() -> None:
    with op.batch_alter_table("hospital") as batch:
        batch.add_column(sa.Column("public", sa.Boolean(), nullable=False,
                                   server_default=sa.text("true")))
        batch.add_column(sa.Column("contact_phone", sa.String(32), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("alert_webhook", sa.String(512), nullable=False,
                                   server_default=""))
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("area", sa.String(130), nullable=False, server_default=""))
    day = sa.String(10)
    _day_table("stats_study_day", [
        sa.Column("day", day, nullable=False),
        sa.Column("hospital_id", sa.BigInteger(), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False)], [
        sa.Column(c, sa.Integer(), nullable=False) for c in ("studies",)] + [
        sa.Column("instances", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("on_time", sa.Integer(), nullable=False),
        sa.Column("late", sa.Integer(), nullable=False),
        sa.Column("undated", sa.Integer(), nullable=False),
        sa.Column("delay_sum_s", sa.Float(), nullable=False),
        sa.Column("delay_max_s", sa.Float(), nullable=False),
        sa.Column("no_report_24h", sa.Integer(), nullable=False),
        sa.Column("no_report_72h", sa.Integer(), nullable=False)])
    _day_table("stats_report_day", [
        sa.Column("day", day, nullable=False),
        sa.Column("hospital_id", sa.BigInteger(), nullable=False)], [
        sa.Column(c, sa.Integer(), nullable=False)
        for c in ("reports", "on_time", "late", "without_images")])
    _day_table("stats_use_day", [
        sa.Column("day", day, nullable=False),
        sa.Column("hospital_id", sa.BigInteger(), nullable=False),
        sa.Column("metric", sa.String(48), nullable=False)], [
        sa.Column("count", sa.Float(), nullable=False)])
    _day_table("stats_pair_day", [
        sa.Column("day", day, nullable=False),
        sa.Column("viewer_hospital_id", sa.BigInteger(), nullable=False),
        sa.Column("owner_hospital_id", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False)], [
        sa.Column("views", sa.Integer(), nullable=False)])
    op.create_table(
        "stats_hospital",
        sa.Column("hospital_id", sa.BigInteger(), nullable=False),
        sa.Column("first_received_at", _TS, nullable=False),
        sa.Column("last_received_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("hospital_id", name="pk_stats_hospital"))
    op.create_table(
        "stats_watermark",
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("position", sa.String(64), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("source", name="pk_stats_watermark"))
    op.create_table(
        "stats_alert",
        sa.Column("id", _ID, nullable=False),
        sa.Column("hospital_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("opened_at", _TS, nullable=False),
        sa.Column("notified", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stats_alert"),
        sa.UniqueConstraint("hospital_id", "kind", "day",
                            name="uq_stats_alert_hospital_id_kind_day"))
    op.create_index("ix_stats_alert_opened_at", "stats_alert", ["opened_at"])
    # The rollup finds changed studies and reports by updated_at.
    op.create_index("ix_study_updated_at", "study", ["updated_at"])
    op.create_index("ix_report_updated_at", "report", ["updated_at"])
    op.create_index("ix_study_received_at", "study", ["received_at"])
    op.create_index("ix_instance_version_superseded_at", "instance_version",
                    ["superseded_at"])


def downgrade() -> None:
    op.drop_index("ix_instance_version_superseded_at", table_name="instance_version")
    op.drop_index("ix_study_received_at", table_name="study")
    op.drop_index("ix_report_updated_at", table_name="report")
    op.drop_index("ix_study_updated_at", table_name="study")
    op.drop_index("ix_stats_alert_opened_at", table_name="stats_alert")
    for name in ("stats_alert", "stats_watermark", "stats_hospital", "stats_pair_day",
                 "stats_use_day", "stats_report_day", "stats_study_day"):
        op.drop_table(name)
    with op.batch_alter_table("account") as batch:
        batch.drop_column("area")
    with op.batch_alter_table("hospital") as batch:
        for column in ("alert_webhook", "contact_phone", "public"):
            batch.drop_column(column)
