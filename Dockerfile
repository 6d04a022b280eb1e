# imagestore behind gunicorn (settings in gunicorn.conf.py). See docs/deploy.md.
#   docker build -t imagestore .
#   docker run --rm --env-file imagestore.env imagestore flask --app imagestore db upgrade
#   docker run -d -p 8000:8000 --env-file imagestore.env imagestore
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=8000 \
    IMAGESTORE_INSTANCE_PATH=/var/lib/imagestore

RUN useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin imagestore \
    && install -d -o imagestore -g imagestore /var/lib/imagestore \
    && python -m venv /opt/venv

WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY imagestore/ imagestore/
# Editable, as `make install` does: the app finds migrations/ beside its package.
RUN pip install -e .
COPY migrations/ migrations/
COPY wsgi.py gunicorn.conf.py ./
RUN python -m compileall -q imagestore migrations wsgi.py gunicorn.conf.py

USER imagestore
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=3)"]
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
