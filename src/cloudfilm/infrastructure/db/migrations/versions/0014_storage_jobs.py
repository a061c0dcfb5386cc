"""storage: background job outbox, blob checks, transcoding history

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 19:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "storage_job",
        sa.Column("id", _ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_storage_job"),
    )
    op.create_index("ix_storage_job_state_updated_at", "storage_job", ["state", "updated_at"])
    op.create_index("ix_storage_job_sop_instance_uid", "storage_job", ["sop_instance_uid"])
    op.create_table(
        "blob_check",
        sa.Column("id", _ID, nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("checked_at", _TS, nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("repaired", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_blob_check"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_blob_check_sop_instance_uid"),
    )
    with op.batch_alter_table("instance_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transfer_syntax_uid", sa.String(64), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("reason", sa.String(16), nullable=False,
                                      server_default="replaced"))
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("original_transfer_syntax_uid", sa.String(64),
                                      nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_column("original_transfer_syntax_uid")
    with op.batch_alter_table("instance_version", schema=None) as batch_op:
        batch_op.drop_column("reason")
        batch_op.drop_column("transfer_syntax_uid")
    op.drop_table("blob_check")
    op.drop_index("ix_storage_job_sop_instance_uid", table_name="storage_job")
    op.drop_index("ix_storage_job_state_updated_at", table_name="storage_job")
    op.drop_table("storage_job")
