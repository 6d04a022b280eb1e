"""Schemas of what the service writes without a marshmallow schema: errors and page envelopes."""

from marshmallow import INCLUDE, Schema, fields


class ProblemSchema(Schema):
    """An RFC 9457 problem, as `errors.error_body` builds it; other members may follow."""

    class Meta:
        unknown = INCLUDE

    type = fields.String(required=True, metadata={"example": "about:blank"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(
            metadata={"description": "Messages by field, or a list of them for the whole body."}
        ),
        metadata={"description": "What is wrong with the input, by location (query, json, ...)."},
    )


class PageSchema(Schema):
    """The envelope of one page, as `pagination.paginate` builds it; `results` is added."""

    count = fields.Integer(
        required=True,
        allow_none=True,
        metadata={"description": "Rows matching the filters; null on a keyset page (`cursor`)."},
    )
    next = fields.Url(required=True, allow_none=True)
    previous = fields.Url(required=True, allow_none=True)
