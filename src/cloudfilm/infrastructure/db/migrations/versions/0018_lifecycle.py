"""lifecycle: storage tier per instance, retention rules, legal holds, deletion requests

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03 22:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("storage_tier", sa.String(8), nullable=False,
                                      server_default="hot"))
    op.create_table(
        "retention_rule",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("hospital_code", sa.String(64), nullable=False),
        sa.Column("study_kind", sa.String(64), nullable=False),
        sa.Column("years", sa.Integer(), nullable=False),
        sa.Column("minor_age", sa.Integer(), nullable=True),
        sa.Column("minor_years", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_retention_rule"),
    )
    op.create_table(
        "legal_hold",
        sa.Column("id", _ID, nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("hospital_code", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("placed_by", sa.String(128), nullable=False),
        sa.Column("placed_at", _TS, nullable=False),
        sa.Column("released_by", sa.String(128), nullable=False),
        sa.Column("released_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_legal_hold"),
    )
    op.create_index("ix_legal_hold_study_instance_uid", "legal_hold", ["study_instance_uid"])
    op.create_index("ix_legal_hold_hospital_code_patient_id", "legal_hold",
                    ["hospital_code", "patient_id"])
    op.create_table(
        "deletion_request",
        sa.Column("id", _ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("proposed_by", sa.String(128), nullable=False),
        sa.Column("proposed_at", _TS, nullable=False),
        sa.Column("decided_by", sa.String(128), nullable=False),
        sa.Column("decided_at", _TS, nullable=True),
        sa.Column("studies_json", sa.Text(), nullable=False),
        sa.Column("result_json", sa.Text(), nullable=False),
        sa.Column("objects", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deletion_request"),
    )


def downgrade() -> None:
    op.drop_table("deletion_request")
    op.drop_index("ix_legal_hold_hospital_code_patient_id", table_name="legal_hold")
    op.drop_index("ix_legal_hold_study_instance_uid", table_name="legal_hold")
    op.drop_table("legal_hold")
    op.drop_table("retention_rule")
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_column("storage_tier")
