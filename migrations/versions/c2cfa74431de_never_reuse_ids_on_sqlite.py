"""Never give a deleted row's id to a new one on SQLite (AUTOINCREMENT)

Revision ID: c2cfa74431de
Revises: 4aada2bbcdcf
Create Date: 2026-12-02 08:30:00

Without AUTOINCREMENT, SQLite gives a new row the highest id in its table plus one, so the id
of the newest row, once deleted, is given again. Each table is copied into one declared with
AUTOINCREMENT, rows, indexes and constraints kept; its counter then starts above the highest
id left and above the highest one the tracking log shows. PostgreSQL's sequences never give an
id twice: nothing changes there.

"""

import sqlalchemy as sa
from alembic import op

revision = "c2cfa74431de"
down_revision = "4aada2bbcdcf"
branch_labels = None
depends_on = None

# The tables keyed by an id of their own (image_tags is keyed by the ids it links).
TABLES = ("users", "tags", "images", "tokens", "trackings")

# The highest id of a table's rows that the tracking log names: in the path of a request that
# succeeded (`/api/images/42/file`), and in the JSON answered to the request that created it
# (an object, or a list of them). Only such ids can have existed; a failed request names any.
SEEN_ID = sa.text(
    """
    SELECT max(seen) FROM (
        SELECT CAST(substr(endpoint, length(:path) + 1) AS INTEGER) AS seen FROM trackings
        WHERE endpoint > :path AND endpoint < :after AND status_code < 400
        UNION ALL
        SELECT node.value AS seen
        FROM trackings,
             json_tree(CASE WHEN json_valid(response) THEN response ELSE '{}' END) AS node
        WHERE endpoint = :path AND method = 'POST' AND status_code = 201
          AND node.key = 'id' AND node.type = 'integer'
          AND (node.path = '$' OR (node.path GLOB '$[[][0-9]*[]]' AND node.path NOT GLOB '*.*'))
    )
    """
)
# The tables whose ids the API shows and the tracking log names, by the path of their list.
LOGGED = {"images": "/api/images/", "tokens": "/api/tokens/"}


def raise_counter(connection, table, seen):
    """Make SQLite's counter of a table at least `seen`: the next row gets a higher id."""
    current = connection.execute(
        sa.text("SELECT seq FROM sqlite_sequence WHERE name = :table"), {"table": table}
    ).scalar()
    if current is None:
        statement = "INSERT INTO sqlite_sequence (name, seq) VALUES (:table, :seen)"
    elif current < seen:
        statement = "UPDATE sqlite_sequence SET seq = :seen WHERE name = :table"
    else:
        return
    connection.execute(sa.text(statement), {"table": table, "seen": seen})


def recreate(table, autoincrement):
    """Copy a SQLite table into one declared with or without AUTOINCREMENT, keeping all else."""
    with op.batch_alter_table(
        table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade():
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        return
    for table in TABLES:
        recreate(table, autoincrement=True)
    for table, path in LOGGED.items():
        # Every path below `path` sorts before `after` ("0" follows "/"): an index range.
        after = path[:-1] + "0"
        seen = connection.execute(SEEN_ID, {"path": path, "after": after}).scalar()
        if seen:
            raise_counter(connection, table, seen)


def downgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in reversed(TABLES):
        recreate(table, autoincrement=False)
