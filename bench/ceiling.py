"""The ceiling: a bare Flask app answering a small JSON body, served like imagestore."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> dict[str, str]:
    """Answer a small JSON body."""
    return {"hello": "world"}
