"""Settings, all read from the environment.

With no variables set this is the embedded demo: an SQLite file and a filesystem Celery broker
under ``VAR_DIR``. Production sets ``DATABASE_URL`` (PostgreSQL), ``CELERY_BROKER_URL`` (Redis or
RabbitMQ), ``SECRET_KEY``, ``DEBUG=0`` and ``ALLOWED_HOSTS``.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
DEBUG = envbool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise RuntimeError("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "insecure-demo-key-only-for-debug-mode-0123456789abcdefghijklmnopqrstuvwxyz"
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")

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
    "drf_spectacular_sidecar",
    "generation",
    "annotation",
    "judging",
    "evolution",
    "sweeps",
    "benchmarks",
    "evalsite.accounts",
    "evalsite.runs",
]

MIDDLEWARE = [
    "evalsite.middleware.ConnectionCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "evalsite.middleware.RequestSizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "evalsite.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "evalsite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "evalsite" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]
WSGI_APPLICATION = "evalsite.wsgi.application"

VAR_DIR.mkdir(parents=True, exist_ok=True)
_database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
_postgres = _database_url.startswith(("postgres://", "postgresql://", "pgsql://"))
# PostgreSQL: each web worker keeps its connection (DB_CONN_MAX_AGE seconds) instead of opening
# one per request (bench/annotate_load.py: a new connection per request cost PostgreSQL more CPU
# than the loop's own statements). Gunicorn's sync workers run one request at a time, so a
# persistent connection is a pool of one; psycopg's pool (DB_POOL_MAX_SIZE > 0, needs
# psycopg[pool]) bounds connections for threaded workers instead. Health checks (a SELECT 1 on a
# connection's first use in a request) make a restarted server invisible to the next request.
DATABASES = {
    "default": dj_database_url.parse(
        _database_url,
        conn_max_age=envint("DB_CONN_MAX_AGE", 600 if _postgres else 0),
        conn_health_checks=envbool("DB_CONN_HEALTH_CHECKS", True),
    )
}
# With health checks on, a connection that served a request without an error less than this
# many seconds ago is not checked again (evalsite.middleware.ConnectionCheckMiddleware); 0: check
# before every request, as Django does. Off by default: the check costs about 40 us of the app's
# CPU per request, which the bench could not tell from its noise (issue 30), and skipping it
# lets a database restart fail one request per busy worker.
DB_HEALTH_CHECK_IDLE = envint("DB_HEALTH_CHECK_IDLE", 0)
if _postgres:
    # A database host that drops packets must not hold a request (or the health check) for
    # the operating system's connect timeout.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = envint(
        "DB_CONNECT_TIMEOUT", 5
    )
# DB_PREPARED_STATEMENTS=1 prepares the annotator loop's statements once per connection
# (annotation/loop/sql.py's cursor binds on the server; psycopg prepares a statement from its
# fifth run, which Django turns off by default) and plans them once (DB_PLAN_CACHE_MODE,
# force_generic_plan by default). Off by default: on a quiet 2-core machine (2026-12-07,
# bench/annotate_load.py) it saved a third of PostgreSQL's CPU per vote while the study's
# tables were fresh (N=20 first: 165-172 votes/s against 145 without), but the saving turned
# into a loss as votes accumulated (N=100 after it: PostgreSQL 6.1-6.2 ms per vote against 5.2,
# 128-132 votes/s against 137), likely plans kept from statistics of nearly empty tables; not
# diagnosed. Plans are not the whole story: with DB_PLAN_CACHE_MODE=auto (a custom plan while it
# is cheaper) the pattern held on 2026-12-08, alternating with it off: N=20 178.2 and 144.6 votes/s
# against 151.4 and 115.2, N=100 131.4 and 100.6 against 147.6 and 124.9 (PostgreSQL 5.8-7.0 ms
# per vote at N=100 against 5.1-5.8). The ORM's statements are bound in the client and never
# prepared either way.
# Keep it off behind a pooler that cannot keep prepared statements (PgBouncer in transaction
# mode before 1.21, or without max_prepared_statements).
DB_PREPARED_STATEMENTS = _postgres and envbool("DB_PREPARED_STATEMENTS", False)
if DB_PREPARED_STATEMENTS:
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["prepare_threshold"] = 5
    _plan_cache_mode = os.environ.get("DB_PLAN_CACHE_MODE", "force_generic_plan")
    _options["options"] = f"{_options.get('options', '')} -c plan_cache_mode={_plan_cache_mode}"
if _postgres and envint("DB_POOL_MAX_SIZE", 0) > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps the connections
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": envint("DB_POOL_MIN_SIZE", 1),
        "max_size": envint("DB_POOL_MAX_SIZE", 0),
        "timeout": envint("DB_POOL_TIMEOUT", 10),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The worker and the web server write the demo database at the same time.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django's model backend with the signed-in user read by one plain statement on every request
# (evalsite.auth.ModelBackend). A session names the backend that signed it in, so sessions from
# before this setting end once (their users sign in again); listing Django's backend as well
# would keep them, but hash every failed sign-in's password twice.
AUTHENTICATION_BACKENDS = ["evalsite.auth.ModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
# Failed sign-ins per username before a pause (counted in the shared cache).
LOGIN_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5)
LOGIN_FAILURE_WINDOW = envint("LOGIN_FAILURE_WINDOW", 900)
# Failures from one client address, over every username it tries (a password spray).
LOGIN_ADDRESS_FAILURE_LIMIT = envint("LOGIN_ADDRESS_FAILURE_LIMIT", 50)
# Proxies in front of the app that each append the address they received from to
# X-Forwarded-For (nginx: `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`).
# 0 (the default): the header is ignored and the address is REMOTE_ADDR, since a client can send
# any X-Forwarded-For it likes. N: the N-th entry from the right, the one the outermost trusted
# proxy wrote; a header with fewer entries did not pass through them all, so REMOTE_ADDR again.
# evalsite.auth.client_address applies this for every per-address limit (SECURITY.md).
NUM_PROXIES = envint("NUM_PROXIES", 0)
if NUM_PROXIES < 0:
    raise RuntimeError("NUM_PROXIES must be 0 (no proxy) or the number of trusted proxies")
# "/" sends staff to their home (/staff/) and annotators to their studies.
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ja", "日本語")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Models, adapters and checkpoints; rows store paths relative to this root, or hub names.
MODEL_STORAGE = Path(os.environ.get("MODEL_STORAGE", VAR_DIR / "models")).resolve()
# Fine-tunes over several processes (a run's ``processes``): the worker launches them with
# ``torchrun`` (data parallel: NCCL on GPUs, gloo on CPU), or with ``accelerate launch`` and this
# config file when set (FSDP or DeepSpeed ZeRO for full fine-tunes of large models; see
# generation/training/accelerate/ and docs/training.md). After a cancel the processes get this
# long to checkpoint and stop before their process group is killed.
FINETUNE_ACCELERATE_CONFIG = os.environ.get("FINETUNE_ACCELERATE_CONFIG", "")
FINETUNE_STOP_GRACE_SECONDS = float(os.environ.get("FINETUNE_STOP_GRACE_SECONDS", "300"))
# Which engine generates and judges with local weights: "auto" (vLLM's offline engine on a worker
# where vLLM is installed and a CUDA GPU is visible, transformers' generate elsewhere),
# "transformers" or "vllm". A run's own ``engine`` option overrides it.
GENERATION_ENGINE = os.environ.get("GENERATION_ENGINE", "auto")
# Folders of the team's own lm-eval task YAML (with local data files) that benchmark runs offer,
# separated like PATH.
BENCHMARK_TASK_DIRS = [
    Path(p)
    for p in os.environ.get("BENCHMARK_TASK_DIRS", str(BASE_DIR / "fixtures" / "benchmarks")).split(
        os.pathsep
    )
    if p
]
# Where a served model's endpoint_url may point: host names (".example.com" for a domain and its
# sub-domains), IP addresses and CIDR networks, comma-separated; "*" allows any host. A name not
# listed must resolve only to listed networks. Checked when a model is saved and by the worker
# before every request. The default suits the demo and the tests (`transformers serve` on
# 127.0.0.1); production lists its serving cluster and hosted APIs (SECURITY.md).
ENDPOINT_ALLOWED_HOSTS = envlist("ENDPOINT_ALLOWED_HOSTS", "localhost,127.0.0.0/8,::1")
# Largest upload accepted (prompt sets, instruction data, vote imports).
MAX_UPLOAD_BYTES = envint("MAX_UPLOAD_BYTES", 20 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_UPLOAD_BYTES
# Vote files carry whole conversations: a FastChat battle file is larger than a prompt set.
MAX_VOTE_IMPORT_BYTES = envint("MAX_VOTE_IMPORT_BYTES", 200 * 1024 * 1024)


# Throttles (login failures, DRF rates) must be shared by every web worker: Redis when there is
# one (CACHE_URL, else the broker's Redis server in the next database number, so that clearing
# the cache never drops queued tasks), a per-process memory cache for the single-process demo.
def _cache_url_from_broker(broker: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    if not broker.startswith(("redis://", "rediss://")):
        return ""
    parts = urlsplit(broker)
    db = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(db + 1) % 16}"))


_cache_url = os.environ.get("CACHE_URL") or _cache_url_from_broker(
    os.environ.get("CELERY_BROKER_URL", "")
)
CACHES = {
    "default": (
        {
            # Django's, with one redis-py client per pool instead of one per command.
            "BACKEND": "evalsite.cache.RedisCache",
            "LOCATION": _cache_url,
            "KEY_PREFIX": os.environ.get("CACHE_PREFIX", "evalsite"),
        }
        if _cache_url
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}
# With a shared cache, sessions are read from Redis: each request of the annotator loop read
# its session from the database before. cached_db rather than cache: the hot path is the same
# (reads hit the cache; sessions are written only at sign-in), and the database copy keeps
# everyone signed in when Redis restarts or evicts keys under memory pressure.
SESSION_ENGINE = (
    "django.contrib.sessions.backends.cached_db"
    if _cache_url
    else "django.contrib.sessions.backends.db"
)

# --- Mail and password reset -------------------------------------------------------------------
# Reset mails go through this SMTP server. Without one the reset pages are off (404, no link on
# the sign-in page): they would accept requests and send nothing. PASSWORD_RESET_ENABLED=1
# turns them on anyway (a mail server on localhost), =0 off with a server set.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
_mail_configured = bool(EMAIL_HOST)
EMAIL_HOST = EMAIL_HOST or "localhost"  # Django's default, for PASSWORD_RESET_ENABLED=1 alone
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "webmaster@localhost")
PASSWORD_RESET_ENABLED = envbool("PASSWORD_RESET_ENABLED", _mail_configured)
# Reset requests (each may send a mail) per email address and per client address in the window.
PASSWORD_RESET_EMAIL_LIMIT = envint("PASSWORD_RESET_EMAIL_LIMIT", 3)
PASSWORD_RESET_ADDRESS_LIMIT = envint("PASSWORD_RESET_ADDRESS_LIMIT", 10)
PASSWORD_RESET_WINDOW = envint("PASSWORD_RESET_WINDOW", 3600)

# --- Celery ------------------------------------------------------------------------------------
_broker_dir = VAR_DIR / "broker"
# The embedded broker names a host although it has none: kombu falls back to "localhost" for a
# URL without one and logs "No hostname was supplied" on every connection (each --wait census).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://localhost//"
if CELERY_BROKER_URL == "filesystem://":
    CELERY_BROKER_URL = "filesystem://localhost//"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # kombu polls the folder once a second by default: a task waited up to a second before
        # a worker saw it (each shard of a run, each step of a sweep). A tenth of a second costs
        # a directory listing per worker ten times a second.
        "polling_interval": float(os.environ.get("CELERY_POLLING_INTERVAL", "0.1")),
    }
else:
    # Redis re-delivers an unacknowledged task after visibility_timeout; generation and
    # fine-tunes can take hours, and a heartbeat on the run row tells live from dead.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": envint("CELERY_VISIBILITY", 43200)}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "generation.tasks.language_model_merge_task": {"queue": "gpu"},
    "generation.tasks.*": {"queue": "default"},
    "annotation.tasks.*": {"queue": "default"},
    # A sweep only creates runs and moves them along: the GPU work is in those runs.
    "sweeps.tasks.*": {"queue": "default"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULE = {
    # Every run kind: runs whose worker died (stale heartbeat) and runs whose message was lost.
    "requeue-runs": {
        "task": "runs.requeue",
        "schedule": timedelta(seconds=envint("RUN_STALE_CHECK_SECONDS", 120)),
    },
    # A sweep moves on when its runs finish (a hook); this catches any step a hook missed.
    "advance-sweeps": {
        "task": "sweeps.tasks.sweeps_advance_task",
        "schedule": timedelta(seconds=envint("SWEEP_ADVANCE_SECONDS", 60)),
    },
}
SWEEP_MAX_CELLS = envint("SWEEP_MAX_CELLS", 48)  # fine-tune runs one sweep may queue (its grid)
# A running run whose heartbeat is older than this is considered dead and requeued.
RUN_HEARTBEAT_TIMEOUT = timedelta(seconds=envint("RUN_HEARTBEAT_TIMEOUT", 300))
RUN_HEARTBEAT_INTERVAL = float(os.environ.get("RUN_HEARTBEAT_INTERVAL", "15"))
# A queued run no worker has taken this long after its message was sent is sent again (the
# message was lost); a duplicate is harmless, the run's claim lets only one worker execute it.
RUN_QUEUED_RESEND_SECONDS = envint("RUN_QUEUED_RESEND_SECONDS", 900)
# The most shards one run is split into (evalsite/runs/shards.py).
RUN_SHARDS_MAX = envint("RUN_SHARDS_MAX", 16)
# Shards of a run created without the option: 0 = one per worker consuming its queue (a census
# of the broker, cached WORKER_CENSUS_CACHE_SECONDS); N = N (1: never split unless asked).
RUN_SHARDS_DEFAULT = envint("RUN_SHARDS_DEFAULT", 0)
# Who consumes which queue (evalsite/runs/workers.py): the health check, the run admins and the
# --wait commands ask the broker, briefly, and say when nobody has taken a run.
BROKER_CHECK_TIMEOUT = float(os.environ.get("BROKER_CHECK_TIMEOUT", "2"))
WORKER_INSPECT_TIMEOUT = float(os.environ.get("WORKER_INSPECT_TIMEOUT", "1"))
WORKER_CENSUS_CACHE_SECONDS = float(os.environ.get("WORKER_CENSUS_CACHE_SECONDS", "5"))
WAIT_NO_WORKER_SECONDS = float(os.environ.get("WAIT_NO_WORKER_SECONDS", "5"))
WAIT_RECHECK_SECONDS = float(os.environ.get("WAIT_RECHECK_SECONDS", "30"))
WAIT_POLL_SECONDS = float(os.environ.get("WAIT_POLL_SECONDS", "1"))

# --- REST API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Sessions (CSRF on writes), then personal API tokens (`Authorization: Bearer`, failures
    # limited per address like sign-ins). HTTP Basic stays off: it sat outside the sign-in limits.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "evalsite.accounts.authentication.BearerTokenAuthentication",
    ],
    # Staff, and Django's model permissions as the admin applies them (SECURITY.md).
    "DEFAULT_PERMISSION_CLASSES": ["evalsite.permissions.StaffModelPermissions"],
    # Bounded nesting, no lone surrogates: hostile bodies are a 400, never a 500.
    "DEFAULT_PARSER_CLASSES": [
        "evalsite.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # DRF's None means "the whole X-Forwarded-For header", which a client writes. The project's
    # throttles take the address from evalsite.auth.client_address; this keeps any stock DRF
    # throttle on REMOTE_ADDR (0) unless proxies are configured.
    "NUM_PROXIES": NUM_PROXIES,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # A value PostgreSQL cannot store (a NUL byte) is the client's mistake: 400, not 500.
    "EXCEPTION_HANDLER": "evalsite.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "annotate": os.environ.get("ANNOTATE_RATE", "120/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Pairwise evaluation API",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    # Swagger UI from the installed sidecar package, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Two `status` fields with different choices would otherwise share one enum name.
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "generation.models.GenerationRun.Status",
        "StudyStatusEnum": "annotation.models.Study.Status",
        "SweepStatusEnum": "sweeps.models.Sweep.Status",
        "SweepCellStatusEnum": "sweeps.models.SweepCell.Status",
        "EngineEnum": "generation.models.runs.GeneratesWithEngine.Engine",
    },
}

# --- Annotation --------------------------------------------------------------------------------
ASSIGNMENT_LEASE = timedelta(seconds=envint("ASSIGNMENT_LEASE_SECONDS", 900))
IDENTITY_WORDS = envlist(
    "IDENTITY_WORDS",
    "OpenAI,ChatGPT,GPT-4,GPT-3,Anthropic,Claude,Google,Gemini,Meta,Llama,LINE,rinna,"
    "CyberAgent,ELYZA,Stability,StableLM,Mistral,Qwen",
)

# --- Experiment trackers (evalsite/trackers.py, docs/training.md) ------------------------------
# Where fine-tune runs report their loss (transformers' report_to) and where a study's or the
# leaderboard's results are logged on request: none, tensorboard, wandb or mlflow. The location
# variables keep the libraries' own names, so a worker's environment means the same to both.
EXPERIMENT_TRACKER = os.environ.get("EXPERIMENT_TRACKER", "none").strip().lower() or "none"
if EXPERIMENT_TRACKER not in ("none", "tensorboard", "wandb", "mlflow"):
    raise RuntimeError(
        f"EXPERIMENT_TRACKER is {EXPERIMENT_TRACKER!r}; use none, tensorboard, wandb or mlflow"
    )
# TensorBoard: one folder per run under this one (`tensorboard --logdir` it).
TENSORBOARD_LOG_DIR = Path(os.environ.get("TENSORBOARD_LOG_DIR", VAR_DIR / "tensorboard"))
# MLflow: a tracking server (http://...) or a file store (a folder, the default).
MLFLOW_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI") or (VAR_DIR / "mlruns").as_uri()
MLFLOW_EXPERIMENT_NAME = os.environ.get("MLFLOW_EXPERIMENT_NAME", "evalsite")
# Weights & Biases: offline (the default) keeps runs under WANDB_DIR/wandb until `wandb sync`.
WANDB_PROJECT = os.environ.get("WANDB_PROJECT", "evalsite")
WANDB_ENTITY = os.environ.get("WANDB_ENTITY", "")
WANDB_MODE = os.environ.get("WANDB_MODE", "offline")
if WANDB_MODE not in ("offline", "online", "disabled"):
    raise RuntimeError(f"WANDB_MODE is {WANDB_MODE!r}; use offline, online or disabled")
WANDB_DIR = Path(os.environ.get("WANDB_DIR", VAR_DIR))

# --- Production --------------------------------------------------------------------------------
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
