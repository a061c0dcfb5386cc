"""UPS-RS Update Workitem: the attributes an engine set on its workitem while IN PROGRESS
(PS3.18 11.6), kept as DICOM JSON on the workitem

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


def downgrade() -> None:
    with op.batch_alter_table("ai_workitem") as batch:
        batch.drop_column("updates")
