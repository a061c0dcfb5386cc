"""AI assistance: algorithms, the hospitals that enabled them, the ingest outbox, the UPS
worklist and the results

Revision ID: 0022
Revises: 0020
Create Date: 2026-12-03 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0020"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ai_algorithm",
        sa.Column("id", _ID, nullable=False),
        sa.Column("public_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("vendor", sa.String(128), nullable=False),
        sa.Column("intended_use", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("plugin", sa.String(256), nullable=False),
        sa.Column("modalities", sa.String(128), nullable=False),
        sa.Column("body_parts", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("input", sa.String(16), nullable=False),
        sa.Column("key_enc", sa.String(256), nullable=False),
        sa.Column("registered_by", sa.String(128), nullable=False),
        sa.Column("registered_at", _TS, nullable=False),
        sa.Column("approved_by", sa.String(128), nullable=False),
        sa.Column("approved_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_algorithm")),
        sa.UniqueConstraint("public_id", name=op.f("uq_ai_algorithm_public_id")),
    )
    op.create_index(op.f("ix_ai_algorithm_token_hash"), "ai_algorithm", ["token_hash"])
    op.create_table(
        "ai_enablement",
        sa.Column("id", _ID, nullable=False),
        sa.Column("algorithm_id", _ID, nullable=False),
        sa.Column("hospital_id", _ID, nullable=False),
        sa.Column("enabled_by", sa.String(128), nullable=False),
        sa.Column("enabled_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["algorithm_id"], ["ai_algorithm.id"],
                                name=op.f("fk_ai_enablement_algorithm_id_ai_algorithm")),
        sa.ForeignKeyConstraint(["hospital_id"], ["hospital.id"],
                                name=op.f("fk_ai_enablement_hospital_id_hospital")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_enablement")),
        sa.UniqueConstraint("algorithm_id", "hospital_id",
                            name=op.f("uq_ai_enablement_algorithm_id_hospital_id")),
    )
    op.create_table(
        "ai_pending_study",
        sa.Column("id", _ID, nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("due_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_pending_study")),
        sa.UniqueConstraint("study_instance_uid",
                            name=op.f("uq_ai_pending_study_study_instance_uid")),
    )
    op.create_index(op.f("ix_ai_pending_study_due_at"), "ai_pending_study", ["due_at"])
    op.create_table(
        "ai_workitem",
        sa.Column("id", _ID, nullable=False),
        sa.Column("uid", sa.String(64), nullable=False),
        sa.Column("algorithm_id", _ID, nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("hospital_id", _ID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("transaction_uid", sa.String(64), nullable=False),
        sa.Column("queued", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["algorithm_id"], ["ai_algorithm.id"],
                                name=op.f("fk_ai_workitem_algorithm_id_ai_algorithm")),
        sa.ForeignKeyConstraint(["hospital_id"], ["hospital.id"],
                                name=op.f("fk_ai_workitem_hospital_id_hospital")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_workitem")),
        sa.UniqueConstraint("uid", name=op.f("uq_ai_workitem_uid")),
        sa.UniqueConstraint("algorithm_id", "study_instance_uid",
                            name=op.f("uq_ai_workitem_algorithm_id_study_instance_uid")),
    )
    op.create_index(op.f("ix_ai_workitem_algorithm_id_state"), "ai_workitem",
                    ["algorithm_id", "state"])
    op.create_index(op.f("ix_ai_workitem_study_instance_uid"), "ai_workitem",
                    ["study_instance_uid"])
    op.create_index(op.f("ix_ai_workitem_state_updated_at"), "ai_workitem",
                    ["state", "updated_at"])
    op.create_table(
        "ai_result",
        sa.Column("id", _ID, nullable=False),
        sa.Column("workitem_id", _ID, nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("findings_json", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("review", sa.String(16), nullable=False),
        sa.Column("reviewed_by", sa.String(128), nullable=False),
        sa.Column("reviewed_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(["workitem_id"], ["ai_workitem.id"],
                                name=op.f("fk_ai_result_workitem_id_ai_workitem")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_result")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_ai_result_sop_instance_uid")),
    )
    op.create_index(op.f("ix_ai_result_study_instance_uid"), "ai_result",
                    ["study_instance_uid"])
    op.create_index(op.f("ix_ai_result_workitem_id"), "ai_result", ["workitem_id"])


def downgrade() -> None:
    op.drop_table("ai_result")
    op.drop_table("ai_workitem")
    op.drop_table("ai_pending_study")
    op.drop_table("ai_enablement")
    op.drop_table("ai_algorithm")
