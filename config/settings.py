"""The one settings module. Everything that differs between machines comes from the environment.

Local defaults are safe for `make run`: SQLite under var/, local Redis, SES pointed at the local
emulator. Production is switched on by `DEBUG=false`, which refuses the development secret.
"""

import hashlib
import hmac
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
VAR_DIR.mkdir(exist_ok=True)

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"  # noqa: S105 - refused when DEBUG is false
DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY if DEBUG else "")
if not DEBUG and (not SECRET_KEY or SECRET_KEY == DEV_SECRET_KEY):
    raise ImproperlyConfigured("SECRET_KEY must be set to a real secret when DEBUG is false.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# The absolute base URL used in links inside emails (unsubscribe), where no request is at hand.
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "django_celery_beat",
    "anymail",
    "simple_history",
    "crm",
    "contacts",
    "campaigns",
]

MIDDLEWARE = [
    # First: probes are answered before host checks, sessions and logging (docs/deploy.md).
    "config.health.HealthCheckMiddleware",
    # Binds a request id to every log line of the request and returns it as X-Request-ID.
    "config.observability.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Puts the request's user on audit history rows (who changed the amount).
    "simple_history.middleware.HistoryRequestMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "crm.idempotency.IdempotencyMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'trickle.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process, the worker and beat read while one of them writes; the busy
    # timeout makes a writer wait for the lock instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # A file, not :memory:, so that a Celery worker in another process sees the test database.
    DATABASES["default"]["TEST"] = {
        "NAME": env.str("SQLITE_TEST_NAME", default=str(VAR_DIR / "test.sqlite3")),
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Behind PgBouncer in transaction mode a session outlives no transaction: no server-side cursors
    # (`.iterator()` would use one) and no named prepared statements (psycopg prepares a query it
    # has run five times). See docs/deploy.md.
    if env.bool("PGBOUNCER_TRANSACTION_MODE", default=False):
        DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
        DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = None

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Audit history is a record, not an undo button: reverting would bypass the status-change log.
SIMPLE_HISTORY_REVERT_DISABLED = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "static"

# Request bodies above this are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("MAX_BODY_BYTES", default=5 * 1024 * 1024)

# Region for phone numbers given without a country code (ISO 3166 code such as "MT"); empty:
# such numbers are refused, since guessing the country would store a wrong number.
PHONE_DEFAULT_REGION = env.str("PHONE_DEFAULT_REGION", default="").upper()

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Every Redis key Trickle writes starts with this, so tests and several installs can share a server.
REDIS_PREFIX = env.str("REDIS_PREFIX", default="trickle")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_PREFIX,
    }
}

# Public website forms (/f/<key>/): submissions per client IP, across all forms; body size cap;
# whether the app sits behind one reverse proxy that appends the client to X-Forwarded-For.
FORM_RATE_LIMIT = env.str("FORM_RATE_LIMIT", default="10/min")
FORM_MAX_BODY_BYTES = env.int("FORM_MAX_BODY_BYTES", default=64 * 1024)
FORM_TRUST_X_FORWARDED_FOR = env.bool("FORM_TRUST_X_FORWARDED_FOR", default=False)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["crm.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["crm.authentication.HasWorkspace"],
    "DEFAULT_PARSER_CLASSES": ["crm.parsers.LimitedJSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["crm.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env.str("API_RATE_LIMIT", default="6000/min")},
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "crm.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Trickle API",
    "DESCRIPTION": "Contacts and drip campaigns. Authenticate with `Authorization: Bearer <api key>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ContactStatusEnum": "contacts.models.Contact.Status",
        "BatchItemStatusEnum": ["created", "updated", "error"],
    },
}

# Celery: Redis is the broker; results are not needed (the ledger is the Delivery table).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
# Celery closes the database connection around every task unless told to reuse it; reconnecting
# per task costs a PostgreSQL backend start. config/celery.py still drops a broken or old one
# around each task (CONN_MAX_AGE, health checks), as Django does around each request.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="trickle")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
# Remote control (`celery_ping`, `celery inspect`) is per install: several installs sharing one Redis
# must not answer each other's liveness probes.
CELERY_CONTROL_EXCHANGE = env.str("CELERY_CONTROL_EXCHANGE", default=REDIS_PREFIX)

# Email goes out through Amazon SES v2 (django-anymail). SES_ENDPOINT_URL points boto3 at a local
# SES emulator (moto, or tools/ses_endpoint.py); unset in production.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="anymail.backends.amazon_ses.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Trickle <hello@trickle.localhost>")
SES_REGION = env.str("AWS_REGION", default="us-east-1")
# With no AWS credentials in development, mail goes to the local SES endpoint that `make run`
# starts (tools/ses_endpoint.py), never to the real SES.
_LOCAL_SES = "http://127.0.0.1:8025" if DEBUG and not env.str("AWS_ACCESS_KEY_ID", default="") else ""
SES_ENDPOINT_URL = env.str("SES_ENDPOINT_URL", default=_LOCAL_SES) or None
SES_CONFIGURATION_SET = env.str("SES_CONFIGURATION_SET", default="") or None
# Emails per second across every worker on every machine (the account's SES maximum send rate).
SES_MAX_SEND_RATE = env.float("SES_MAX_SEND_RATE", default=14.0)
# Use SendBulkEmail with SES-stored templates (50 recipients a call). moto has no SendBulkEmail,
# so the single-send Raw path stays available and is what the moto tests use.
SES_BULK = env.bool("SES_BULK", default=False)
ANYMAIL = {
    "AMAZON_SES_CLIENT_PARAMS": {
        "region_name": SES_REGION,
        # No retries inside botocore: a call that may have reached SES must not be repeated
        # behind our back (at-most-once). Our worker decides, per delivery, what is safe to retry.
        "config": {"retries": {"total_max_attempts": 1}, "connect_timeout": 5, "read_timeout": 30},
        **({"endpoint_url": SES_ENDPOINT_URL} if SES_ENDPOINT_URL else {}),
    },
    **({"AMAZON_SES_CONFIGURATION_SET_NAME": SES_CONFIGURATION_SET} if SES_CONFIGURATION_SET else {}),
}
if _LOCAL_SES and SES_ENDPOINT_URL == _LOCAL_SES:
    # boto3 signs every request; the local endpoint accepts any credentials.
    ANYMAIL["AMAZON_SES_SESSION_PARAMS"] = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}

# Deliveries that wait in `queued` longer than this were lost by the broker (Redis restarted): re-dispatch.
DELIVERY_REQUEUE_AFTER_SECONDS = env.int("DELIVERY_REQUEUE_AFTER_SECONDS", default=600)
# Transient SES failures are retried this many times (with backoff) before the delivery fails.
DELIVERY_MAX_ATTEMPTS = env.int("DELIVERY_MAX_ATTEMPTS", default=10)
# The namespace part of every List-Id header: <campaign-ID.WORKSPACE.LIST_ID_DOMAIN>.
LIST_ID_DOMAIN = env.str("LIST_ID_DOMAIN", default="trickle.localhost")

# Keyed hash of suppressed addresses (HMAC-SHA256). NEVER rotate without re-hashing every
# Suppression row and Contact.email_hash: a new key silently un-suppresses everyone. The default is
# derived from SECRET_KEY, so set this explicitly before ever rotating SECRET_KEY.
SUPPRESSION_KEY = (
    env.str("SUPPRESSION_KEY", default="")
    or hmac.new(SECRET_KEY.encode(), b"trickle.suppression", hashlib.sha256).hexdigest()
)
# Amazon SNS topics whose SES event notifications /webhooks/ses/ accepts; anything else is refused.
SES_SNS_TOPIC_ARNS = env.list("SES_SNS_TOPIC_ARNS", default=[])

# A delivery still `sending` after this long was abandoned by a dead worker: it becomes `unknown`.
DELIVERY_SENDING_TIMEOUT_SECONDS = env.int("DELIVERY_SENDING_TIMEOUT_SECONDS", default=900)
# Deliveries handed to one worker task. The task claims and sends them 50 at a time (one
# SendBulkEmail), so a killed worker strands at most 50 as `unknown`; 500 a task keeps Celery's
# per-task cost and the tick's publish count low (docs/benchmarks.md).
DELIVERY_CHUNK_SIZE = env.int("DELIVERY_CHUNK_SIZE", default=500)
# A tick that enrolls or schedules at least this many rows refreshes PostgreSQL's statistics
# before dispatching, so the workers' claims are planned on the primary key.
TICK_ANALYZE_ROWS = env.int("TICK_ANALYZE_ROWS", default=10_000)

if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)

# `LOG_FORMAT=json`: one JSON object per line with request_id / task_id / delivery ids as fields
# (config/observability.py); `plain` (the default) is for people reading a terminal.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "config.observability.ContextFilter"}},
    "formatters": {
        "plain": {
            "()": "config.observability.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "config.observability.JsonLineFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
