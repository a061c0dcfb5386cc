"""one audit record per answer: the residents it names, indexed (issue 12)

A search whose answer carries several residents' data wrote one chained record per resident
(~54 for a 2-day range at 10 M instances: a hash, a row and three index entries each). Now it
is one record whose hashed ``detail`` lists the residents, and ``audit_event_resident``
holds one (resident, seq) row per named resident, so that each resident's "who looked at
my data" finds it by index. Append-only, as ``audit_event``.

Revision ID: 0033_search12
Revises: 0032_dash17
Create Date: 2026-12-04 16:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0033_search12"
down_revision = "0032_dash17"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_event_resident",
        sa.Column("resident_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resident_id", "seq", name=op.f("pk_audit_event_resident")),
    )
    op.create_index(op.f("ix_audit_event_resident_seq"), "audit_event_resident", ["seq"],
                    unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""
            CREATE FUNCTION audit_event_resident_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'audit_event_resident is append-only';
            END;
            $$ LANGUAGE plpgsql
        """)
        op.execute("""
            CREATE TRIGGER audit_event_resident_append_only BEFORE UPDATE OR DELETE
            ON audit_event_resident
            FOR EACH ROW EXECUTE FUNCTION audit_event_resident_append_only()
        """)
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(f"""
                CREATE TRIGGER audit_event_resident_no_{event.lower()} BEFORE {event}
                ON audit_event_resident
                BEGIN SELECT RAISE(ABORT, 'audit_event_resident is append-only'); END
            """)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_resident_append_only "
                   "ON audit_event_resident")
        op.execute("DROP FUNCTION IF EXISTS audit_event_resident_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_event_resident_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_event_resident_no_delete")
    op.drop_index(op.f("ix_audit_event_resident_seq"), table_name="audit_event_resident")
    op.drop_table("audit_event_resident")
