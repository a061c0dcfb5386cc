"""de-identified research: projects, exports, residents' refusal of research use

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 19:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("resident", sa.Column("research_refused", sa.Boolean(),
                                        server_default=sa.text("false"), nullable=False))
    op.create_table(
        "research_project",
        sa.Column("id", _ID, nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=256), nullable=False),
        sa.Column("principal_investigator", sa.String(length=128), nullable=False),
        sa.Column("institution", sa.String(length=256), nullable=False),
        sa.Column("ethics_reference", sa.String(length=128), nullable=False),
        sa.Column("ethics_expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("options_json", sa.Text(), nullable=False),
        sa.Column("cohort_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("key_enc", sa.String(length=256), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_by", sa.String(length=128), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_research_project")),
        sa.UniqueConstraint("public_id", name=op.f("uq_research_project_public_id")),
    )
    op.create_table(
        "research_export",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exported", sa.Integer(), nullable=False),
        sa.Column("excluded", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["research_project.id"],
                                name=op.f("fk_research_export_project_id_research_project")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_research_export")),
    )
    op.create_index(op.f("ix_research_export_project_id"), "research_export", ["project_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_research_export_project_id"), table_name="research_export")
    op.drop_table("research_export")
    op.drop_table("research_project")
    with op.batch_alter_table("resident") as batch:
        batch.drop_column("research_refused")
