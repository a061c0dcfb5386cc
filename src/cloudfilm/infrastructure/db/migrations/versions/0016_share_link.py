"""share links (a resident's time-limited, revocable view-only link to one study) and
portal preferences of an account (elderly mode)

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-03 19:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0014"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "share_link",
        sa.Column("id", _ID, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("resident_id", _ID, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("pin_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("failed_pins", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["resident_id"], ["resident.id"],
                                name="fk_share_link_resident_id_resident"),
        sa.PrimaryKeyConstraint("id", name="pk_share_link"),
        sa.UniqueConstraint("token_hash", name="uq_share_link_token_hash"),
    )
    op.create_index("ix_share_link_resident_id", "share_link", ["resident_id"])
    op.create_table(
        "portal_preference",
        sa.Column("account_id", _ID, nullable=False),
        sa.Column("elderly", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"],
                                name="fk_portal_preference_account_id_account"),
        sa.PrimaryKeyConstraint("account_id", name="pk_portal_preference"),
    )


def downgrade() -> None:
    op.drop_table("portal_preference")
    op.drop_index("ix_share_link_resident_id", table_name="share_link")
    op.drop_table("share_link")
