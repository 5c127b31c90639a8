"""Settings come from the environment; a bad value stops the start, naming the variable."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from sovereign import environment
from tests.instances import ROOT


def start_with(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sovereign.settings",
        "SOVEREIGN_DATA_DIR": str(tmp_path / "data"),
        **variables,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SOVEREIGN_PORT", "eighty", "SOVEREIGN_PORT='eighty' is not a whole number."),
        ("SOVEREIGN_PORT", "70000", "SOVEREIGN_PORT=70000 is out of range (1..65535)."),
        ("SOVEREIGN_DEBUG", "maybe", "SOVEREIGN_DEBUG='maybe' is not a boolean"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL='localhost:6379' is not a Redis URL"),
        ("DATABASE_URL", "mysql://root:pw@db/x", "DATABASE_URL is not a PostgreSQL URL"),
        ("DATABASE_URL", "postgresql://sovereign:pw@db:5432", "DATABASE_URL is not a Postgre"),
        ("SOVEREIGN_CSRF_TRUSTED_ORIGINS", "umbrel.local", "SOVEREIGN_CSRF_TRUSTED_ORIGINS has"),
        ("SOVEREIGN_LOG_LEVEL", "loud", "SOVEREIGN_LOG_LEVEL='LOUD' is not one of"),
        ("SOVEREIGN_SECRET_KEY", "short", "SOVEREIGN_SECRET_KEY is too short"),
        ("SOVEREIGN_ENGINE_THREADS", "-1", "SOVEREIGN_ENGINE_THREADS=-1 is out of range (0..256)."),
        ("SOVEREIGN_ENGINE_NICE", "-5", "SOVEREIGN_ENGINE_NICE=-5 is out of range (0..19)."),
        (
            "SOVEREIGN_PROVIDER_TOPUP_SAT",
            "0",
            "SOVEREIGN_PROVIDER_TOPUP_SAT=0 is out of range (1..1000000).",
        ),
        ("SOVEREIGN_ENGINE_NICE", "low", "SOVEREIGN_ENGINE_NICE='low' is not a whole number."),
        ("SOVEREIGN_ENGINE_REPRODUCIBLE", "always", "SOVEREIGN_ENGINE_REPRODUCIBLE='always' is"),
        (
            "SOVEREIGN_LIGHTNING_REST_URL",
            "10.21.21.96:2107",
            "SOVEREIGN_LIGHTNING_REST_URL='10.21.21.96:2107' is not CLNRest's address",
        ),
        (
            "SOVEREIGN_LIGHTNING_REST_URL",
            "https://10.21.21.96:99999",
            "SOVEREIGN_LIGHTNING_REST_URL='https://10.21.21.96:99999' is not CLNRest's address",
        ),
    ],
)
def test_it_refuses_to_start_with_a_malformed_value_and_names_the_variable(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    result = start_with(tmp_path, **{variable: value})

    assert result.returncode == 2
    assert result.stderr.startswith(f"Sovereign cannot start: {message}")
    assert "Traceback" not in result.stderr


def test_it_refuses_a_data_directory_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    result = start_with(tmp_path, SOVEREIGN_DATA_DIR=str(blocker / "data"))

    assert result.returncode == 2
    assert "SOVEREIGN_DATA_DIR=" in result.stderr
    assert "cannot be created" in result.stderr


# Each variable the README documents, the setting it gives, and its value when unset.
DEFAULTS: dict[str, tuple[str, object]] = {
    "SOVEREIGN_HOST": ("HOST", "127.0.0.1"),
    "SOVEREIGN_PORT": ("PORT", 8000),
    "SOVEREIGN_ALLOWED_HOSTS": ("ALLOWED_HOSTS", ["127.0.0.1", "[::1]", "localhost"]),
    "SOVEREIGN_CSRF_TRUSTED_ORIGINS": (
        "CSRF_TRUSTED_ORIGINS",
        ["http://127.0.0.1:8000", "http://localhost:8000"],
    ),
    "SOVEREIGN_TRUSTED_PROXIES": ("TRUSTED_PROXIES", ["127.0.0.1"]),
    "SOVEREIGN_TRUST_FORWARDED_PROTO": ("SECURE_PROXY_SSL_HEADER", None),
    "SOVEREIGN_DEBUG": ("DEBUG", False),
    "REDIS_URL": ("REDIS_URL", ""),
    "DATABASE_URL": ("DATABASE_ENGINE", "django.db.backends.sqlite3"),
    "SOVEREIGN_SETUP_SECRET": ("SETUP_SECRET", ""),
    "SOVEREIGN_NOSTR_RELAYS": (
        "NOSTR_RELAYS",
        ["wss://relay.damus.io", "wss://nos.lol", "wss://relay.primal.net"],
    ),
    "SOVEREIGN_ENGINE_SLOTS": ("ENGINE_SLOTS", 4),
    "SOVEREIGN_ENGINE_CONTEXT": ("ENGINE_CONTEXT_PER_SLOT", 2048),
    "SOVEREIGN_ENGINE_QUEUE": ("ENGINE_QUEUE", 16),
    "SOVEREIGN_ENGINE_IDLE_SECONDS": ("ENGINE_IDLE_SECONDS", 600),
    "SOVEREIGN_ENGINE_THREADS": ("ENGINE_THREADS", 0),
    "SOVEREIGN_ENGINE_NICE": ("ENGINE_NICE", 10),
    "SOVEREIGN_ENGINE_REPRODUCIBLE": ("ENGINE_REPRODUCIBLE", False),
    "SOVEREIGN_LIGHTNING_RPC": ("LIGHTNING_RPC", ""),
    "SOVEREIGN_LIGHTNING_REST_URL": ("LIGHTNING_REST_URL", ""),
    "SOVEREIGN_LIGHTNING_RUNE_FILE": ("LIGHTNING_RUNE_FILE", ""),
    "SOVEREIGN_LIGHTNING_REST_CA": ("LIGHTNING_REST_CA", ""),
    "SOVEREIGN_LIGHTNING_PAY_SECONDS": ("LIGHTNING_PAY_SECONDS", 60),
    "SOVEREIGN_PROVIDER_TIMEOUT_SECONDS": ("PROVIDER_TIMEOUT_SECONDS", 60),
    "SOVEREIGN_PROVIDER_MAX_PRICE_SAT": ("PROVIDER_MAX_PRICE_SAT", 100),
    "SOVEREIGN_PROVIDER_TOPUP_SAT": ("PROVIDER_TOPUP_SAT", 1000),
    "SOVEREIGN_AGENT_STEP_UP_SAT": ("AGENT_STEP_UP_SAT", 1000),
    "SOVEREIGN_AGENT_STEP_LEASE_SECONDS": ("AGENT_STEP_LEASE_SECONDS", 60),
    "SOVEREIGN_AGENT_WAIT_HOURS": ("AGENT_WAIT_HOURS", 24),
    "SOVEREIGN_SHARING_STRANGER_SLOTS": ("SHARING_STRANGER_SLOTS", 1),
    "SOVEREIGN_SHARING_TOKEN_DAYS": ("SHARING_TOKEN_DAYS", 30),
    "SOVEREIGN_SHARING_TOKEN_REQUESTS": ("SHARING_TOKEN_REQUESTS", 10),
    "SOVEREIGN_SHARING_REQUESTS_PER_MINUTE": ("SHARING_REQUESTS_PER_MINUTE", 30),
    "SOVEREIGN_SHARING_MAX_REQUEST_BYTES": ("SHARING_MAX_REQUEST_BYTES", 65536),
    "SOVEREIGN_WORKER_CONCURRENCY": ("WORKER_CONCURRENCY", 2),
    "SOVEREIGN_LOG_LEVEL": ("LOG_LEVEL", "INFO"),
}
# Checked on their own below: they depend on the data directory.
BY_DATA_DIRECTORY = {"SOVEREIGN_DATA_DIR", "SOVEREIGN_SECRET_KEY"}


def test_the_readme_documents_exactly_the_variables_checked_here() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.MULTILINE))
    assert documented == set(DEFAULTS) | BY_DATA_DIRECTORY


def test_every_other_variable_has_a_working_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["SOVEREIGN_DATA_DIR"] = str(tmp_path / "data")
    names = sorted({name for name, _ in DEFAULTS.values()})
    code = (
        "import django, json, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'sovereign.settings'; "
        "django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n, None) for n in {names!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    for variable, (name, default) in DEFAULTS.items():
        value = sorted(values[name]) if isinstance(default, list) else values[name]
        expected = sorted(default) if isinstance(default, list) else default
        assert value == expected, f"{variable}: {name} is {value!r}, not {expected!r}"
    assert (tmp_path / "data" / "secret_key").exists()


def test_a_generated_secret_key_is_kept_owner_only_and_reused(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"

    first = environment.secret_key("UNSET_FOR_THIS_TEST", key_file)
    second = environment.secret_key("UNSET_FOR_THIS_TEST", key_file)

    assert first == second
    assert len(first) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [key_file]


def test_a_secret_key_from_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SECRET", "k" * 40)
    assert environment.secret_key("TEST_SECRET", tmp_path / "secret_key") == "k" * 40
    assert not (tmp_path / "secret_key").exists()


def test_origins_lose_a_trailing_slash_and_refuse_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORIGINS", "http://umbrel.local:3410/, https://node.example")
    assert environment.env_origins("ORIGINS", []) == [
        "http://umbrel.local:3410",
        "https://node.example",
    ]
    monkeypatch.setenv("ORIGINS", "http://umbrel.local:3410/app")
    with pytest.raises(ImproperlyConfigured, match="ORIGINS has 'http://umbrel.local:3410/app'"):
        environment.env_origins("ORIGINS", [])


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("OFF", False), ("1", True)])
def test_booleans_read_the_usual_spellings(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("FLAG", value)
    assert environment.env_bool("FLAG", not expected) is expected


def test_debug_is_off_unless_asked(settings: object) -> None:
    assert settings.DEBUG is False  # type: ignore[attr-defined]


def test_a_database_url_gives_postgresql_and_keeps_its_password_in_databases_only(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sovereign.settings",
        "SOVEREIGN_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": "postgresql://sovereign:hunter2secret@db.lan:5433/node",
    }
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "others = [n for n in dir(s) if n.isupper() and n != 'DATABASES' "
        "and 'hunter2secret' in repr(getattr(s, n))]; "
        "d = s.DATABASES['default']; print(json.dumps([d['ENGINE'], d['HOST'], d['PORT'], "
        "d['NAME'], d['USER'], d['PASSWORD'], d['CONN_MAX_AGE'], s.DATABASE_ENGINE, others]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    engine, host, port, name, user, password, max_age, shown, others = json.loads(result.stdout)
    assert engine == shown == "django.db.backends.postgresql"
    assert (host, port, name, user, password) == (
        "db.lan",
        5433,
        "node",
        "sovereign",
        "hunter2secret",
    )
    assert max_age == 0
    assert others == []  # the debug page hides DATABASES' PASSWORD, not a URL in another setting
