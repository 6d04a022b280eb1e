"""Default settings. Each can be overridden in instance/config.py or as an IMAGESTORE_* variable."""

# Database URL; empty means a SQLite file `imagestore.sqlite` in the instance folder.
DATABASE_URL = ""
# Largest accepted request body (one upload, all its fields included), in megabytes.
MAX_UPLOAD_MB = 20
# Most fields a form body may have (a bulk change of 1,000 images and 100 tags, as a form).
MAX_FORM_PARTS = 2000
# Largest image accepted, in pixels (width x height); bigger ones are refused as possible bombs.
MAX_IMAGE_PIXELS = 50_000_000
# Image formats accepted on upload, as Pillow names them.
IMAGE_FORMATS = ["JPEG", "PNG", "GIF", "WEBP"]
# Longest side, in pixels, of the thumbnails that `?size=` may ask for; no other size is made.
THUMBNAIL_SIZES = [128, 256, 512]
# How long clients may cache a downloaded file or thumbnail (Cache-Control: private, max-age).
FILE_CACHE_SECONDS = 86400
# Age, in seconds, an unused file must reach before `flask storage check --repair` removes it.
STORAGE_REPAIR_GRACE_SECONDS = 3600
# Where files are stored: empty or file:///folder for a local folder, s3://bucket/prefix for an
# S3-compatible object store (credentials from the standard AWS_* variables or the S3_* below).
STORAGE_URL = ""
# S3 endpoint (for a non-AWS store), region and keys; empty means the standard AWS settings.
S3_ENDPOINT_URL = ""
S3_REGION = ""
S3_ACCESS_KEY_ID = ""
S3_SECRET_ACCESS_KEY = ""
# Seconds to wait for the object store before answering 503.
S3_TIMEOUT_SECONDS = 10
# When above 0, downloads redirect to a presigned URL valid this many seconds (no bytes through us).
S3_PRESIGNED_DOWNLOAD_SECONDS = 0
# Folder for stored image files; empty means `media/` in the instance folder.
MEDIA_FOLDER = ""
# Bytes of a JSON response body kept in a tracking row before it is cut.
TRACKING_BODY_LIMIT = 4096
# Record a tracking row for every API call (turned off only to measure its cost).
TRACKING_ENABLED = True
# True: a background thread of each worker writes the tracking rows in batches, up to half a
# second after the response; a row is also kept in a spool file until then, so a killed worker
# loses none. False: each request commits its row before its response is sent (costlier).
TRACKING_WRITE_BEHIND = True
# Folder of those spool files; empty means `tracking-spool/` in the instance folder. It must be
# on the host itself (each host's workers write what its killed workers left).
TRACKING_SPOOL_FOLDER = ""
# Seconds a verified Basic-auth password is remembered by a worker, and how many are remembered.
AUTH_CACHE_SECONDS = 60
AUTH_CACHE_SIZE = 1024
# Hash method for new passwords (werkzeug.security.generate_password_hash). PBKDF2-SHA256 with
# 600,000 iterations, as OWASP advises, needs no working memory; werkzeug's scrypt takes 32 MiB
# in the worker for every check.
PASSWORD_HASH_METHOD = "pbkdf2:sha256:600000"
# Level of the JSON log lines on stderr: DEBUG, INFO (one line per request), WARNING or ERROR.
LOG_LEVEL = "INFO"
# Proxies in front of the app whose X-Forwarded-For and -Proto are believed; 0 believes none.
PROXY_HOPS = 0
# Most memory, in MB, that decoding one image may take, for its check or a thumbnail: estimated
# from its header before any pixel is decoded (its pixels at the scale they are decoded, times
# what Pillow and the decoder hold for each, and the file). Larger images get 400, and their
# thumbnails 409 if they were stored before. With 160, a worker stays under 300 MB.
MAX_DECODED_MB = 160
# Most memory, in MB, that decoding the files of one upload may take, added up; larger uploads
# get 400 before any is decoded. It bounds how long one request decodes (about 1.5 s a GB).
MAX_REQUEST_DECODED_MB = 2048
# Failed Basic logins (wrong password, unknown or deactivated user) are counted per username and
# per client address; past the free failures each one locks both, 1, 2, 4... times
# LOGIN_LOCK_SECONDS up to LOGIN_MAX_LOCK_SECONDS, answering 429 with Retry-After meanwhile.
# Where the counts live: empty keeps them in each worker's memory; redis://host:6379/0 shares
# them between every worker and host.
RATELIMIT_STORAGE_URL = ""
# Prefix of the throttle's keys in that storage (deployments may share one Redis).
RATELIMIT_KEY_PREFIX = "imagestore"
# Failures allowed before the back-off starts, per username and per client address.
LOGIN_FREE_FAILURES_PER_USER = 5
LOGIN_FREE_FAILURES_PER_ADDRESS = 20
# Seconds a series of failures is counted, from its first failure; then it is forgotten. At
# least LOGIN_MAX_LOCK_SECONDS.
LOGIN_FAILURE_WINDOW_SECONDS = 3600
# The first lock, in seconds, and the longest.
LOGIN_LOCK_SECONDS = 1
LOGIN_MAX_LOCK_SECONDS = 900
