"""dicom peers: the addresses a peer may call from (host name, IP or CIDR list)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 18:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Empty: the registered host is the only address the AE title is accepted from.
    with op.batch_alter_table("dicom_peer") as batch:
        batch.add_column(sa.Column("allowed_from", sa.String(length=255), nullable=False,
                                   server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("dicom_peer") as batch:
        batch.drop_column("allowed_from")
