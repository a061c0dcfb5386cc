"""identity proofing: hospital-recorded patient phones, activation codes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 18:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "patient_contact",
        sa.Column("id", _ID, nullable=False),
        sa.Column("patient_fk", _ID, nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("phone_enc", sa.String(length=128), nullable=False),
        sa.Column("phone_masked", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_fk"], ["patient.id"], name=op.f("fk_patient_contact_patient_fk_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_contact")),
        sa.UniqueConstraint("patient_fk", name=op.f("uq_patient_contact_patient_fk")),
    )
    with op.batch_alter_table("patient_contact", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patient_contact_phone_hash"), ["phone_hash"], unique=False
        )
    op.create_table(
        "activation_code",
        sa.Column("id", _ID, nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("resident_id", _ID, nullable=False),
        sa.Column("hospital_id", _ID, nullable=False),
        sa.Column("issued_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospital.id"], name=op.f("fk_activation_code_hospital_id_hospital")
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["resident.id"], name=op.f("fk_activation_code_resident_id_resident")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activation_code")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_activation_code_code_hash")),
    )
    with op.batch_alter_table("activation_code", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_activation_code_resident_id"), ["resident_id"], unique=False
        )
    # The feed used to overwrite resident.phone (clear text) and consent codes fell back to
    # it (issue 11, finding 1). Nothing reads it any more; clear it rather than keep an
    # unproven phone in clear text.
    op.execute("UPDATE resident SET phone = ''")


def downgrade() -> None:
    with op.batch_alter_table("activation_code", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_activation_code_resident_id"))
    op.drop_table("activation_code")
    with op.batch_alter_table("patient_contact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_contact_phone_hash"))
    op.drop_table("patient_contact")
