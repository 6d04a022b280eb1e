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

from alembic import op

revision = "9e41c07b52d3"
down_revision = "c2cfa74431de"
branch_labels = None
depends_on = None


def upgrade():
    op.execute(
        "UPDATE images SET format = 'JPEG', content_type = 'image/jpeg' WHERE format = 'MPO'"
    )
    # Pillow names an animated PNG's format PNG already: only its media type was its own.
    op.execute("UPDATE images SET content_type = 'image/png' WHERE content_type = 'image/apng'")


def downgrade():
    """Leave the rows as they are: the bytes are a JPEG or a PNG to the earlier code too."""
