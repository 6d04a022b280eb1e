"""WSGI entry point: `gunicorn wsgi:app`, and plain `flask ...` finds the app here."""

from imagestore import create_app

app = create_app()
