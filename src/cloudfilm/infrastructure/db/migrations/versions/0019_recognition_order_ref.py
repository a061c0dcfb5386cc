"""exam mutual recognition: the order feed's order number on each check

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03 22:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recognition_check", schema=None) as batch_op:
        batch_op.add_column(sa.Column("order_ref", sa.String(length=64), nullable=False,
                                      server_default=""))
        batch_op.create_index(batch_op.f("ix_recognition_check_hospital_id_order_ref"),
                              ["hospital_id", "order_ref"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("recognition_check", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recognition_check_hospital_id_order_ref"))
        batch_op.drop_column("order_ref")
