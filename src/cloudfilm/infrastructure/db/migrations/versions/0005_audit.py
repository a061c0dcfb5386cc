"""audit trail: hash-chained, append-only audit_event and its chain head

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 16:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("id", _ID, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_subject", sa.String(length=128), nullable=False),
        sa.Column("actor_hospital_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_hospital_code", sa.String(length=64), nullable=False),
        sa.Column("actor_display", sa.String(length=256), nullable=False),
        sa.Column("actor_department", sa.String(length=128), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("resource_type", sa.String(length=16), nullable=False),
        sa.Column("resource_uid", sa.String(length=64), nullable=False),
        sa.Column("resident_id", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_event_seq")),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_event_resident_id_seq"),
                              ["resident_id", "seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_event_actor_subject_seq"),
                              ["actor_subject", "seq"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_event_at"), ["at"], unique=False)

    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    op.execute(f"INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, 0, '{_GENESIS}')")

    # Append-only: refuse UPDATE and DELETE of audit rows at the database. (TRUNCATE, used by
    # the test fixtures, is not a row event; whoever drops the triggers still meets the
    # hash chain.)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION audit_event_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'audit_event is append-only';
            END;
            $$ LANGUAGE plpgsql
        """)
        op.execute("""
            CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event
            FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()
        """)
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(f"""
                CREATE TRIGGER audit_event_no_{event.lower()} BEFORE {event} ON audit_event
                BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END
            """)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
    op.drop_table("audit_chain_head")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_event_at"))
        batch_op.drop_index(batch_op.f("ix_audit_event_actor_subject_seq"))
        batch_op.drop_index(batch_op.f("ix_audit_event_resident_id_seq"))
    op.drop_table("audit_event")
