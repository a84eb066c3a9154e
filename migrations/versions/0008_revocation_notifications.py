"""revocation notifications: NOTIFY eid_revocation when anything that ends a token changes

Each process caches which access tokens are still live (app/oidc/livecheck.py) and LISTENs on
this channel to forget them at once. PostgreSQL only: SQLite runs one process and never caches.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 20:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (trigger, table, events): statement-level, so a bulk change sends one notification.
TRIGGERS = (
    ("oauth_revoked_tokens_notify", "oauth_revoked_tokens", "INSERT"),
    ("oauth_grants_notify", "oauth_grants", "UPDATE OF revoked_at OR DELETE"),
    ("accounts_status_notify", "accounts", "UPDATE OF status OR DELETE"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION eid_notify_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('eid_revocation', TG_TABLE_NAME);
            RETURN NULL;
        END $$;
        """
    )
    for name, table, events in TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {name} AFTER {events} ON {table} FOR EACH STATEMENT EXECUTE FUNCTION eid_notify_revocation()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS eid_notify_revocation()")
