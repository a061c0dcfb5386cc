"""a hospital's studies by date: the doctor's and hospital's filtered date-range search

A search restricted by the access policy (``study.hospital_id = H OR patient_fk IN ...``)
over a date range walked every study of the range and filtered it (1,288 rows for one
month at 10 M instances; millions a month at province scale). With this index and the
granted patients resolved to ids, PostgreSQL answers it with a BitmapOr of index scans
that touch only the visible studies (bench/scale_bench.py, docs/capacity.md).

Revision ID: 0028
Revises: 0025
Create Date: 2026-12-04 03:15:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0028"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_study_hospital_id_study_date", "study", ["hospital_id", "study_date"])


def downgrade() -> None:
    op.drop_index("ix_study_hospital_id_study_date", table_name="study")
