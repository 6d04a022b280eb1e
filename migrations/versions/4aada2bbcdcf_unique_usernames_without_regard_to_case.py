"""Make usernames unique without regard to case or Unicode form (NFC, folded beside)

Revision ID: 4aada2bbcdcf
Revises: 5470e650ef97
Create Date: 2026-12-02 04:38:51

"""

import unicodedata
from collections import defaultdict

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

revision = "4aada2bbcdcf"
down_revision = "5470e650ef97"
branch_labels = None
depends_on = None

users = sa.table(
    "users",
    sa.column("id", sa.Integer),
    sa.column("username", sa.String),
    sa.column("username_folded", sa.String),
)


def fold(name):
    """The key under which names are compared from this revision on: NFC, then case-folded."""
    return unicodedata.normalize("NFC", name).casefold()


def refuse_clashes(rows):
    """Stop, changing nothing, when two existing users would get the same folded name."""
    groups = defaultdict(list)
    for user_id, username in rows:
        groups[fold(username)].append(f"{username!r} (id {user_id})")
    clashes = ["; ".join(names) for names in groups.values() if len(names) > 1]
    if clashes:
        raise CommandError(
            "usernames must now differ in more than case or Unicode form, and these users clash: "
            + " | ".join(clashes)
            + ". Nothing was changed. Give all but one user of each group another name in the"
            " database (UPDATE users SET username = 'new name' WHERE id = ...;), then run"
            " `flask db upgrade` again."
        )


def upgrade():
    connection = op.get_bind()
    rows = connection.execute(sa.select(users.c.id, users.c.username).order_by(users.c.id)).all()
    refuse_clashes(rows)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("username_folded", sa.String(length=450), nullable=True))
    for user_id, username in rows:
        normal = unicodedata.normalize("NFC", username)
        connection.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(username=normal, username_folded=fold(normal))
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column(
            "username_folded", existing_type=sa.String(length=450), nullable=False
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_users_username_folded"), ["username_folded"]
        )


def downgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_users_username_folded"), type_="unique")
        batch_op.drop_column("username_folded")
