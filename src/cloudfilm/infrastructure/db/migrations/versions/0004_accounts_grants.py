"""accounts, sessions, SMS codes and outbox, access grants, rate limits

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 15:58:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", _ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("hospital_id", _ID, nullable=True),
        sa.Column("department", sa.String(length=128), nullable=False),
        sa.Column("resident_id", _ID, nullable=True),
        sa.Column("phone_hash", sa.String(length=64), nullable=True),
        sa.Column("phone_enc", sa.String(length=128), nullable=True),
        sa.Column("phone_masked", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_sign_in_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospital.id"], name=op.f("fk_account_hospital_id_hospital")
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["resident.id"], name=op.f("fk_account_resident_id_resident")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account")),
        sa.UniqueConstraint("phone_hash", name=op.f("uq_account_phone_hash")),
        sa.UniqueConstraint("resident_id", name=op.f("uq_account_resident_id")),
        sa.UniqueConstraint("username", name=op.f("uq_account_username")),
    )
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_account_hospital_id"), ["hospital_id"], unique=False)

    op.create_table(
        "auth_session",
        sa.Column("id", _ID, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", _ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name=op.f("fk_auth_session_account_id_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_auth_session_token_hash")),
    )
    with op.batch_alter_table("auth_session", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_auth_session_account_id"), ["account_id"], unique=False
        )

    op.create_table(
        "otp_code",
        sa.Column("id", _ID, nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=80), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_otp_code")),
    )
    with op.batch_alter_table("otp_code", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_otp_code_purpose_subject"), ["purpose", "subject"], unique=False
        )

    op.create_table(
        "sms_outbox",
        sa.Column("id", _ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("phone_masked", sa.String(length=16), nullable=False),
        sa.Column("template", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_outbox")),
    )
    with op.batch_alter_table("sms_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sms_outbox_phone_hash"), ["phone_hash"], unique=False)

    op.create_table(
        "access_grant",
        sa.Column("id", _ID, nullable=False),
        sa.Column("doctor_account_id", _ID, nullable=False),
        sa.Column("hospital_id", _ID, nullable=False),
        sa.Column("resident_id", _ID, nullable=False),
        sa.Column("scope_all", sa.Boolean(), nullable=False),
        sa.Column("study_uids", sa.Text(), nullable=False),
        sa.Column("purpose", sa.String(length=256), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("hours", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("review_status", sa.String(length=16), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_by", sa.String(length=64), nullable=False),
        sa.Column("review_note", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["doctor_account_id"],
            ["account.id"],
            name=op.f("fk_access_grant_doctor_account_id_account"),
        ),
        sa.ForeignKeyConstraint(
            ["hospital_id"], ["hospital.id"], name=op.f("fk_access_grant_hospital_id_hospital")
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["resident.id"], name=op.f("fk_access_grant_resident_id_resident")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_grant")),
    )
    with op.batch_alter_table("access_grant", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_access_grant_doctor_account_id_status"),
            ["doctor_account_id", "status"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_access_grant_hospital_id_review_status"),
            ["hospital_id", "review_status"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_access_grant_resident_id_status"),
            ["resident_id", "status"],
            unique=False,
        )

    op.create_table(
        "rate_limit_event",
        sa.Column("id", _ID, nullable=False),
        sa.Column("bucket", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_limit_event")),
    )
    with op.batch_alter_table("rate_limit_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rate_limit_event_bucket_at"), ["bucket", "at"], unique=False
        )


def downgrade() -> None:
    for table, indexes in (
        ("rate_limit_event", ["ix_rate_limit_event_bucket_at"]),
        ("access_grant", ["ix_access_grant_resident_id_status",
                          "ix_access_grant_hospital_id_review_status",
                          "ix_access_grant_doctor_account_id_status"]),
        ("sms_outbox", ["ix_sms_outbox_phone_hash"]),
        ("otp_code", ["ix_otp_code_purpose_subject"]),
        ("auth_session", ["ix_auth_session_account_id"]),
        ("account", ["ix_account_hospital_id"]),
    ):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name in indexes:
                batch_op.drop_index(name)
        op.drop_table(table)
