"""the dashboard at 10 M studies (issue 17): every hospital's month totals in one index range

A province's ranking over a year reads every hospital's total over its modalities
(modality ``*``) of a dozen months: by ``(modality, month)`` that is one range of the
rows it returns, where the primary key ``(month, hospital_id, modality)`` walks every
modality's row of every hospital and unit of those months to keep one in seven.

Revision ID: 0031_dash10m_month_modality
Revises: 0030
Create Date: 2026-12-04 05:45:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0031_dash10m_month_modality"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_stats_study_month_modality_month", "stats_study_month", ["modality", "month"]
    )


def downgrade() -> None:
    op.drop_index("ix_stats_study_month_modality_month", table_name="stats_study_month")
