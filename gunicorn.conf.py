"""gunicorn settings of imagestore: `gunicorn -c gunicorn.conf.py wsgi:app`.

`make run` (`python -m imagestore.serve`) starts gunicorn with these settings on a unix socket,
behind nginx, which alone faces clients: sync workers must never be reached directly.

Environment: HOST and PORT (default 127.0.0.1:8000), WEB_CONCURRENCY (number of workers).
"""

import json
import os
import socket

from gunicorn import util

# Address: the same HOST and PORT variables that `make run` takes.
bind = f"{os.environ.get('HOST') or '127.0.0.1'}:{os.environ.get('PORT') or '8000'}"

# Sync workers: each request is CPU work (auth check, SQL, JSON), so one process per core keeps
# every core busy; one more covers the time a worker waits on disk (fsync of an upload).
worker_class = "sync"
workers = int(os.environ.get("WEB_CONCURRENCY") or (os.cpu_count() or 1) + 1)

# A request may take this long (a large upload over a slow link) before its worker is replaced.
timeout = 120
graceful_timeout = 30
# A worker is replaced after this many requests (jittered so they do not restart together),
# which bounds the memory that any slow leak can take.
max_requests = 20000
max_requests_jitter = 2000

# nginx in front bounds a request's head (16 KB a line, 64 KB in all) and answers what is larger
# with problem JSON. gunicorn's own limits are wider, so that whatever nginx passes on reaches
# the app (a refusal of gunicorn's never reaches the tracking log). 0 lifts the limit on the
# request line (8190 bytes at most otherwise); 32768 header fields is gunicorn's maximum.
limit_request_line = 0
limit_request_fields = 32768
limit_request_field_size = 32768
# The app alone decides the scheme, from X-Forwarded-Proto and PROXY_HOPS. gunicorn trusts these
# headers from any peer on a unix socket, and refuses a request whose client sent one that
# contradicts nginx's X-Forwarded-Proto.
secure_scheme_headers = {}

# No control socket: its fixed path in the home folder makes two gunicorns on one host collide.
control_socket_disable = True

# No access log: imagestore records every API call itself; errors still go to stderr.
accesslog = None
errorlog = "-"


def write_problem(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """Write one of gunicorn's own refusals of a request it cannot read (a control character
    in a header value, say) as problem+json, the body the app and nginx answer errors with,
    not as gunicorn's HTML page. The status's own name is sent: gunicorn's `reason` may not
    be it (its 501 says "Bad Request")."""
    # Loaded with the app already: a refusal is answered in a worker.
    from werkzeug.exceptions import default_exceptions

    from imagestore.errors import PROBLEM_JSON, error_body

    error = default_exceptions[status_int](mesg or None)
    body = json.dumps(error_body(error)).encode()
    head = (
        f"HTTP/1.1 {error.code} {error.name}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {PROBLEM_JSON}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Cache-Control: no-store\r\n"
        "Referrer-Policy: no-referrer\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def post_worker_init(worker: object) -> None:
    """Move the loaded app out of the garbage collector's sight: its scans get much shorter.
    Answer gunicorn's own refusals with problem+json (its workers call `util.write_error`)."""
    import gc

    util.write_error = write_problem
    gc.freeze()
