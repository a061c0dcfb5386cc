"""reconciliation queue: objects stored but kept out of the index until settled (no
PatientID, or a Study Instance UID another hospital holds)

Revision ID: 0024
Revises: 0022
Create Date: 2026-12-03 23:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0022"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reconciliation_item",
        sa.Column("id", _ID, nullable=False),
        sa.Column("hospital_id", _ID, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("clash_study_fk", _ID, nullable=True),
        sa.Column("blob_key", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
        sa.Column("door", sa.String(16), nullable=False),
        sa.Column("summary_json", sa.Text(), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("resolved_by", sa.String(128), server_default="", nullable=False),
        sa.Column("result_json", sa.Text(), server_default="{}", nullable=False),
        sa.ForeignKeyConstraint(["hospital_id"], ["hospital.id"],
                                name="fk_reconciliation_item_hospital_id_hospital"),
        sa.ForeignKeyConstraint(["clash_study_fk"], ["study.id"],
                                name="fk_reconciliation_item_clash_study_fk_study"),
        sa.PrimaryKeyConstraint("id", name="pk_reconciliation_item"),
        sa.UniqueConstraint("hospital_id", "sop_instance_uid", "sha256",
                            name="uq_reconciliation_item_hospital_id_sop_instance_uid_sha256"),
    )
    op.create_index("ix_reconciliation_item_hospital_id_state_id", "reconciliation_item",
                    ["hospital_id", "state", "id"])
    op.create_index("ix_reconciliation_item_state_id", "reconciliation_item", ["state", "id"])
    op.create_index("ix_reconciliation_item_blob_key", "reconciliation_item", ["blob_key"])


def downgrade() -> None:
    op.drop_index("ix_reconciliation_item_blob_key", table_name="reconciliation_item")
    op.drop_index("ix_reconciliation_item_state_id", table_name="reconciliation_item")
    op.drop_index("ix_reconciliation_item_hospital_id_state_id",
                  table_name="reconciliation_item")
    op.drop_table("reconciliation_item")
