"""Store every image with the media type of its format: MPO as JPEG, APNG as PNG

Revision ID: 9e41c07b52d3
Revises: c2cfa74431de
Create Date: 2026-12-02 18:00:00

A JPEG with more pictures after the first, as phone cameras write them, was stored as format
MPO and type image/mpo, which browsers do not show and `content_type=image/jpeg` did not find;
an animated PNG was typed image/apng, which the `content_type` filter refused. Both are what
every reader takes them for: a JPEG, a PNG. The bytes and their keys do not change. A
downgrade leaves them so: which image was an MPO is no longer known.

"""

import sqlalchemy as sa
from alembic import op

revision = "9e41c07b52d3"
down_revision = "c2cfa74431de"
branch_labels = None
depends_on = None

RETYPE = sa.text(
    "UPDATE images SET format = :format, content_type = :content_type"
    " WHERE format = :old_format OR content_type = :old_content_type"
)


def upgrade():
    connection = op.get_bind()
    for old_format, old_content_type, format, content_type in (
        ("MPO", "image/mpo", "JPEG", "image/jpeg"),
        ("APNG", "image/apng", "PNG", "image/png"),
    ):
        connection.execute(
            RETYPE,
            {
                "format": format,
                "content_type": content_type,
                "old_format": old_format,
                "old_content_type": old_content_type,
            },
        )


def downgrade():
    """Leave the rows as they are: the bytes are a JPEG or a PNG to the earlier code too."""
