"""the doctor's workstation: single-use launch tokens a hospital's HIS mints

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03 22:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workstation_launch",
        sa.Column("id", _ID, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("hospital_id", _ID, nullable=False),
        sa.Column("patient_fk", _ID, nullable=False),
        sa.Column("doctor_username", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("accession_number", sa.String(64), nullable=False),
        sa.Column("item_code", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(["hospital_id"], ["hospital.id"],
                                name="fk_workstation_launch_hospital_id_hospital"),
        sa.ForeignKeyConstraint(["patient_fk"], ["patient.id"],
                                name="fk_workstation_launch_patient_fk_patient"),
        sa.PrimaryKeyConstraint("id", name="pk_workstation_launch"),
        sa.UniqueConstraint("token_hash", name="uq_workstation_launch_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("workstation_launch")
