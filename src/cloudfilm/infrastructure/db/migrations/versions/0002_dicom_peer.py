"""dicom peers: registered AE titles of hospitals (association control, C-MOVE destinations)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 16:05:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_peer",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ae_title", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("hospital_code", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dicom_peer")),
        sa.UniqueConstraint("ae_title", name=op.f("uq_dicom_peer_ae_title")),
    )


def downgrade() -> None:
    op.drop_table("dicom_peer")
