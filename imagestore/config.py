"""Default settings. Each can be overridden in instance/config.py or as an IMAGESTORE_* variable."""

# Database URL; empty means a SQLite file `imagestore.sqlite` in the instance folder.
DATABASE_URL = ""
# Largest accepted request body (one upload, all its fields included), in megabytes.
MAX_UPLOAD_MB = 20
# Largest image accepted, in pixels (width x height); bigger ones are refused as possible bombs.
MAX_IMAGE_PIXELS = 50_000_000
# Image formats accepted on upload, as Pillow names them.
IMAGE_FORMATS = ["JPEG", "PNG", "GIF", "WEBP"]
# Folder for stored image files; empty means `media/` in the instance folder.
MEDIA_FOLDER = ""
# Bytes of a JSON response body kept in a tracking row before it is cut.
TRACKING_BODY_LIMIT = 4096
# Record a tracking row for every API call (turned off only to measure its cost).
TRACKING_ENABLED = True
# Seconds a verified Basic-auth password is remembered by a worker, and how many are remembered.
AUTH_CACHE_SECONDS = 60
AUTH_CACHE_SIZE = 1024
# Hash method for new passwords (werkzeug.security.generate_password_hash).
PASSWORD_HASH_METHOD = "scrypt"
