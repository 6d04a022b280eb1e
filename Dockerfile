# imagestore: nginx on $HOST:$PORT in front of gunicorn (gunicorn.conf.py) on a unix socket,
# both started by `python -m imagestore.serve`. See docs/deploy.md.
#   docker build -t imagestore .
#   docker run --rm --env-file imagestore.env imagestore flask --app imagestore db upgrade
#   docker run -d -p 8000:8000 --init --stop-timeout 40 --env-file imagestore.env imagestore
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=8000 \
    IMAGESTORE_INSTANCE_PATH=/var/lib/imagestore

# Debian's nginx. Nothing starts it at install time in an image build (no init system); the
# launcher runs its own as the imagestore user, with its files in the instance folder.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx \
    && rm -rf /var/lib/apt/lists/*

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
CMD ["python", "-m", "imagestore.serve"]
