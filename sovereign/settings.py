"""Sovereign's settings, all read from environment variables with working defaults.

The README's settings table lists every variable read here.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from sovereign.environment import (
    env_bool,
    env_choice,
    env_database_url,
    env_directory,
    env_int,
    env_lightning_rest_url,
    env_list,
    env_origins,
    env_redis_url,
    env_relays,
    env_str,
    files_owner_only,
    secret_key,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# Where the node keeps everything it must not lose: database, keys, broker queue.
DATA_DIR = env_directory("SOVEREIGN_DATA_DIR", BASE_DIR / "data")
# Database, keys, conversations, broker queue: nobody else on the box may read them.
files_owner_only()

HOST = env_str("SOVEREIGN_HOST", "127.0.0.1")
PORT = env_int("SOVEREIGN_PORT", 8000, minimum=1, maximum=65535)
_LOCAL_NAMES = ["localhost", "127.0.0.1", "[::1]"]
_LISTEN_NAME = "localhost" if HOST in ("0.0.0.0", "::") else HOST  # noqa: S104
# The address people type into the browser; the URL `manage.py run` prints.
PUBLIC_URL = f"http://{_LISTEN_NAME}:{PORT}"

SECRET_KEY = secret_key("SOVEREIGN_SECRET_KEY", DATA_DIR / "secret_key")
DEBUG = env_bool("SOVEREIGN_DEBUG", False)
ALLOWED_HOSTS = env_list("SOVEREIGN_ALLOWED_HOSTS", sorted({_LISTEN_NAME, *_LOCAL_NAMES}))
CSRF_TRUSTED_ORIGINS = env_origins(
    "SOVEREIGN_CSRF_TRUSTED_ORIGINS",
    sorted({PUBLIC_URL, f"http://localhost:{PORT}", f"http://127.0.0.1:{PORT}"}),
)
# Proxies whose X-Forwarded-For names the real client (for per-address login limits).
# On Umbrel every request comes through app_proxy: without this, all share one address.
TRUSTED_PROXIES = env_list("SOVEREIGN_TRUSTED_PROXIES", ["127.0.0.1"])
# Behind the Umbrel/Start9 proxy that terminates HTTPS and says so in X-Forwarded-Proto.
if env_bool("SOVEREIGN_TRUST_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

REDIS_URL = env_redis_url("REDIS_URL")
WORKER_CONCURRENCY = env_int("SOVEREIGN_WORKER_CONCURRENCY", 2, minimum=1, maximum=64)
LOG_LEVEL = env_choice("SOVEREIGN_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "apps.system",
    "apps.audit",
    "apps.identity",
    "apps.inference",
    "apps.wallet",
    "apps.providers",
    "apps.privacy",
    "apps.agents",
    "apps.sharing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "sovereign.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.identity.access.SetupRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Innermost: its page needs the session, the user and the messages set up above it.
    "sovereign.middleware.NotAllowedPageMiddleware",
]

ROOT_URLCONF = "sovereign.urls"
AUTH_USER_MODEL = "identity.Member"
LOGIN_URL = "identity:login"
ASGI_APPLICATION = "sovereign.asgi.application"

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
                "sovereign.dashboard.theme",
            ],
        },
    },
]

# SQLite in the data directory; or PostgreSQL (DATABASE_URL), which workers on other machines
# can reach. Both serialise the writers of money (apps/wallet/budgets.py says how).
if database_url := env_database_url("DATABASE_URL"):  # not a setting: it holds a password
    # A connection per request or task, closed at its end: the web server is ASGI, where
    # Django's persistent connections are not reused but left open (one per request thread).
    DATABASES = {"default": dict(dj_database_url.parse(database_url, conn_max_age=0))}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "sovereign.sqlite3",
            "OPTIONS": {
                # IMMEDIATE takes the write lock when a transaction begins, so concurrent
                # writers (web and worker) queue up instead of failing mid-transaction.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                # synchronous=FULL: a commit is on disk before it returns, so a payment's
                # pending row survives a power cut before the node is asked to pay (NORMAL, in
                # WAL, may lose the last commits; docs/benchmarks.md has what FULL costs).
                # secure_delete: a deleted conversation is overwritten at once, not left in
                # free pages of the file until they happen to be reused.
                "init_command": (
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;"
                ),
            },
        }
    }
# Which database it is, for what tells people (the URL itself holds a password).
DATABASE_ENGINE = DATABASES["default"]["ENGINE"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"

# Background work. Without REDIS_URL the broker is a folder in the data directory:
# nothing to install, and web and worker on one box share it.
BROKER_DIR = DATA_DIR / "broker"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
else:
    BROKER_DIR.mkdir(mode=0o700, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT = "sovereign.embedded_broker:Transport"  # messages written whole
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Periodic work, run by the worker's embedded beat (`manage.py run` starts it with --beat).
CELERY_BEAT_SCHEDULE = {
    "chat-retention": {"task": "inference.chat_retention_sweep", "schedule": 3600.0},
    "egress-retention": {"task": "privacy.egress_retention_sweep", "schedule": 3600.0},
    "sharing-unpaid-prune": {"task": "sharing.unpaid_balances_prune", "schedule": 3600.0},
    "payments-reconcile": {"task": "wallet.reconcile", "schedule": 30.0},
    "invoices-sync": {"task": "wallet.invoices_sync", "schedule": 15.0},
    "agents-resume": {"task": "agents.resume", "schedule": 15.0},
    "agents-expire": {"task": "agents.expire", "schedule": 300.0},
    # Reads the relays only while an approval code is out (dm.inbox_read checks first), one
    # read at a time; a read not started within its interval is dropped, not queued.
    "agents-inbox": {"task": "agents.inbox", "schedule": 3.0, "options": {"expires": 3}},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# Live events (worker -> web -> browser). Without Redis, a SQLite file both processes open.
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "sovereign.sqlite_channel_layer.SQLiteChannelLayer",
            "CONFIG": {"path": str(DATA_DIR / "channels.sqlite3")},
        }
    }

# Identity. The setup secret claims an unclaimed node once (on Umbrel: the app password);
# without it the node makes one and `make run` prints it. Relays carry login codes by DM,
# remote-signer logins and profiles; an outage never blocks a browser-extension login.
SETUP_SECRET = env_str("SOVEREIGN_SETUP_SECRET", "")
NOSTR_RELAYS = env_relays(
    "SOVEREIGN_NOSTR_RELAYS", ["wss://relay.damus.io", "wss://nos.lol", "wss://relay.primal.net"]
)

# The model engine: how many requests it decodes together, the context each may use, how
# many may wait beyond those (then the API answers 429), when an idle model is unloaded, how
# many CPU threads llama.cpp uses (0: all the cores), and the niceness the engine runs at, so
# the Bitcoin and Lightning nodes beside it win the cores whenever they want them.
ENGINE_SLOTS = env_int("SOVEREIGN_ENGINE_SLOTS", 4, minimum=1, maximum=64)
ENGINE_CONTEXT_PER_SLOT = env_int("SOVEREIGN_ENGINE_CONTEXT", 2048, minimum=256, maximum=131072)
ENGINE_QUEUE = env_int("SOVEREIGN_ENGINE_QUEUE", 16, minimum=0, maximum=1024)
ENGINE_IDLE_SECONDS = env_int("SOVEREIGN_ENGINE_IDLE_SECONDS", 600, minimum=10, maximum=86400)
ENGINE_THREADS = env_int("SOVEREIGN_ENGINE_THREADS", 0, minimum=0, maximum=256)
# Greedy answers the same bit for bit whatever the engine has cached or is doing meanwhile, at
# the cost of reading a new prompt in smaller steps (see apps/inference/batching.py).
ENGINE_REPRODUCIBLE = env_bool("SOVEREIGN_ENGINE_REPRODUCIBLE", False)
ENGINE_NICE = env_int("SOVEREIGN_ENGINE_NICE", 10, minimum=0, maximum=19)
# The largest request a chat takes follows the context: 64 bytes a token (a token is rarely
# more than 8 characters, each at most 6 bytes as JSON) and 64 KiB for the rest.
ENGINE_REQUEST_BYTES = ENGINE_CONTEXT_PER_SLOT * 64 + 64 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = max(2_621_440, ENGINE_REQUEST_BYTES)  # Django's default, or more

# Core Lightning's JSON-RPC socket (<lightning-dir>/<network>/lightning-rpc); empty: no node,
# and paying is refused while everything else works.
LIGHTNING_RPC = env_str("SOVEREIGN_LIGHTNING_RPC", "")
# Or CLNRest (https://host:port), where the socket cannot be opened (Umbrel: root's, 0600): the
# rune is read from its file at each call, and the CA file verifies CLNRest's own certificate
# (empty: the system's CAs). When the URL is set, it is used and the socket is not.
LIGHTNING_REST_URL = env_lightning_rest_url("SOVEREIGN_LIGHTNING_REST_URL")
LIGHTNING_RUNE_FILE = env_str("SOVEREIGN_LIGHTNING_RUNE_FILE", "")
LIGHTNING_REST_CA = env_str("SOVEREIGN_LIGHTNING_REST_CA", "")
LIGHTNING_TIMEOUT = 10.0  # seconds for an answer to a question (getinfo, listpays, …)
# How long xpay may look for a route (its retry_for); a payment the node has no record of is
# failed only this long (plus a margin) after it was asked.
LIGHTNING_PAY_SECONDS = env_int("SOVEREIGN_LIGHTNING_PAY_SECONDS", 60, minimum=1, maximum=600)
ENGINE_DEFAULT_MAX_TOKENS = 512

# Outside providers: how long one may take to begin answering (and between two parts of a
# stream), and the most of an answer read from one (larger is a broken provider).
PROVIDER_TIMEOUT_SECONDS = env_int("SOVEREIGN_PROVIDER_TIMEOUT_SECONDS", 60, minimum=1, maximum=600)
PROVIDER_ANSWER_BYTES = 4 << 20
# The most one outside request may cost when its provider publishes no price (sats).
PROVIDER_MAX_PRICE_SAT = env_int(
    "SOVEREIGN_PROVIDER_MAX_PRICE_SAT", 100, minimum=1, maximum=100_000
)
# How much one top-up of a prepaid provider's balance buys (sats).
PROVIDER_TOPUP_SAT = env_int("SOVEREIGN_PROVIDER_TOPUP_SAT", 1000, minimum=1, maximum=1_000_000)

# Agent tasks: how long a worker holds a running step before another may take it for dead and
# run it again (renewed every third of it while the step runs), and how long a task waits for
# a person (its plan, a step) before it expires.
AGENT_STEP_LEASE_SECONDS = env_int(
    "SOVEREIGN_AGENT_STEP_LEASE_SECONDS", 60, minimum=1, maximum=3600
)
AGENT_WAIT_HOURS = env_int("SOVEREIGN_AGENT_WAIT_HOURS", 24, minimum=1, maximum=24 * 30)
# A step above this cost is approved only with a fresh login signature (or the shell); a
# member's task may set a lower threshold, only the owner's a higher one.
AGENT_STEP_UP_SAT = env_int("SOVEREIGN_AGENT_STEP_UP_SAT", 1000, minimum=0, maximum=10_000_000)

# Selling to strangers: how many of the engine's slots their answers may hold at once (the
# household's requests start first), how long a paid token or key stays valid, how many
# requests a minute one client address may make, and the largest request body they may send.
SHARING_STRANGER_SLOTS = env_int("SOVEREIGN_SHARING_STRANGER_SLOTS", 1, minimum=1, maximum=64)
SHARING_TOKEN_DAYS = env_int("SOVEREIGN_SHARING_TOKEN_DAYS", 30, minimum=1, maximum=3650)
# What a fresh L402 or MPP token costs: this many requests at their most (a prepaid balance,
# metered from each answer's usage, as Aperture sells AI answers).
SHARING_TOKEN_REQUESTS = env_int("SOVEREIGN_SHARING_TOKEN_REQUESTS", 10, minimum=1, maximum=10_000)
SHARING_REQUESTS_PER_MINUTE = env_int(
    "SOVEREIGN_SHARING_REQUESTS_PER_MINUTE", 30, minimum=1, maximum=10_000
)
SHARING_MAX_REQUEST_BYTES = env_int(
    "SOVEREIGN_SHARING_MAX_REQUEST_BYTES", 65536, minimum=1024, maximum=16 << 20
)

# How often the worker reports that it is alive; three missed reports mean down.
HEARTBEAT_SECONDS = 2

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # No access log: Django would log every 4xx with its path, and each 403 with a traceback.
    # Server errors (5xx) are still logged.
    "loggers": {
        "django.request": {"level": "ERROR"},
        "django.security.csrf": {"level": "ERROR"},
        # One line per request to a provider, with its URL: not worth a log line each.
        "httpx2": {"level": "WARNING"},
        "httpcore2": {"level": "WARNING"},
    },
}
