"""gateway heartbeats: last seen per hospital edge gateway, with its queue figures

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-03 18:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "gateway_heartbeat",
        sa.Column("id", _ID, nullable=False),
        sa.Column("hospital_id", _ID, nullable=False),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("first_seen_at", _TS, nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("oldest_unsent_seconds", sa.Integer(), nullable=True),
        sa.Column("bytes_queued", sa.BigInteger(), nullable=False),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["hospital_id"], ["hospital.id"],
                                name="fk_gateway_heartbeat_hospital_id_hospital"),
        sa.PrimaryKeyConstraint("id", name="pk_gateway_heartbeat"),
        sa.UniqueConstraint("hospital_id", "ae_title",
                            name="uq_gateway_heartbeat_hospital_id_ae_title"),
    )


def downgrade() -> None:
    op.drop_table("gateway_heartbeat")
