"""UPS-RS Update Workitem: the attributes an engine set on its workitem while IN PROGRESS
(PS3.18 11.6), kept as DICOM JSON on the workitem; UPS subscriptions (PS3.18 11.10)

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-04 03:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ai_workitem") as batch:
        batch.add_column(sa.Column("updates", sa.Text(), nullable=False, server_default=""))
    op.create_table(
        "ai_ups_subscription",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True),
        sa.Column("algorithm_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  sa.ForeignKey("ai_algorithm.id",
                                name="fk_ai_ups_subscription_algorithm_id_ai_algorithm"),
                  nullable=False),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("workitem_uid", sa.String(64), nullable=False),
        sa.Column("suspended", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("algorithm_id", "ae_title", "workitem_uid",
                            name="uq_ai_ups_subscription_algorithm_id_ae_title_workitem_uid"),
    )


def downgrade() -> None:
    op.drop_table("ai_ups_subscription")
    with op.batch_alter_table("ai_workitem") as batch:
        batch.drop_column("updates")
