"""The Umbrel app folder `umbrel/`, exactly what is submitted as `sovereign/` to umbrel-apps."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.packaging.sources import OTHER_SETTINGS, ROOT, UMBREL_DIR, settings_reads
from tests.packaging.umbrel_lint import lint_app

APP_ID = "sovereign"
# Attached to the pull request, never committed into the package (`package.review_assets`).
PULL_REQUEST_DIR = ROOT / "umbrel-pr"
SOVEREIGN_IMAGE = "ghcr.io/sovereign-node/sovereign"
# The tag and multi-arch digest other apps in umbrel-apps pin Redis to.
REDIS_IMAGE = "redis:7.4.3@sha256:ee8ec723c831b815c3e2f2c6fbd1c145c68d1c04ba284f044ec1434fbca0fee8"
LONG_RUNNING = ("web", "worker", "engine", "redis")
LIGHTNING_CLIENTS = ("web", "worker")
ONE_SHOT = "lightning-access"
# What core-lightning/exports.sh in umbrel-apps exports (commit 6372367), copied by name.
CORE_LIGHTNING_EXPORTS = {
    "APP_CORE_LIGHTNING_IP", "APP_CORE_LIGHTNING_PORT", "APP_CORE_LIGHTNING_DAEMON_IP",
    "APP_CORE_LIGHTNING_DAEMON_PORT", "APP_CORE_LIGHTNING_DAEMON_GRPC_PORT",
    "APP_CORE_LIGHTNING_WEBSOCKET_PORT", "APP_CORE_LIGHTNING_DATA_DIR", "CORE_LIGHTNING_REST_PORT",
    "APP_CORE_LIGHTNING_BITCOIN_NETWORK", "APP_CORE_LIGHTNING_HIDDEN_SERVICE", "APP_CONFIG_DIR",
    "APP_MODE", "CORE_LIGHTNING_PATH", "COMMANDO_CONFIG",
}  # fmt: skip
CORE_LIGHTNING_USED = {
    "APP_CORE_LIGHTNING_DATA_DIR", "APP_CORE_LIGHTNING_BITCOIN_NETWORK",
    "APP_CORE_LIGHTNING_DAEMON_IP", "CORE_LIGHTNING_REST_PORT",
}  # fmt: skip
VARIABLE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a YAML mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    return load_yaml(UMBREL_DIR / "docker-compose.yml")["services"]


def manifest() -> dict[str, Any]:
    return load_yaml(UMBREL_DIR / "umbrel-app.yml")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def dependencies(service: dict[str, Any]) -> dict[str, str | None]:
    depends_on = service.get("depends_on") or {}
    if isinstance(depends_on, list):
        return dict.fromkeys(depends_on)
    return {name: (spec or {}).get("condition") for name, spec in depends_on.items()}


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, options) of each short-syntax volume."""
    return [tuple((volume.split(":") + [""])[:3]) for volume in service.get("volumes", [])]


def variables_in(value: object) -> set[str]:
    """The variables Compose would substitute in value ($$ is a literal dollar)."""
    if isinstance(value, dict):
        return set().union(*(variables_in(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(variables_in(item) for item in value))
    if not isinstance(value, str):
        return set()
    return {braced or bare for braced, bare in VARIABLE.findall(value) if braced or bare}


# Umbrel's linter, offline


def test_umbrels_linter_finds_nothing_but_the_digest_the_release_step_pins() -> None:
    findings = lint_app(UMBREL_DIR, APP_ID)
    unpinned = [
        name
        for name, service in services().items()
        if "@sha256:" not in service.get("image", "@sha256:")
    ]
    assert unpinned == ["lightning-access", "web", "worker", "engine"]
    assert {(finding.severity, finding.rule) for finding in findings} == {("error", "image.pinned")}
    assert len(findings) == len(unpinned)
    assert all(f"`{SOVEREIGN_IMAGE}:{manifest()['version']}`" in f.message for f in findings)


def edit_yaml(package: Path, name: str, change: Callable[[dict[str, Any]], object]) -> None:
    data = load_yaml(package / name)
    change(data)
    (package / name).write_text(yaml.safe_dump(data, sort_keys=False))


def edit_compose(change: Callable[[dict[str, Any]], object]) -> Callable[[Path], None]:
    return lambda package: edit_yaml(package, "docker-compose.yml", lambda c: change(c["services"]))


def edit_manifest(change: Callable[[dict[str, Any]], object]) -> Callable[[Path], None]:
    return lambda package: edit_yaml(package, "umbrel-app.yml", change)


def prepend_to_exports(line: str) -> Callable[[Path], None]:
    def change(package: Path) -> None:
        exports = package / "exports.sh"
        exports.write_text(f"{line}\n{exports.read_text()}")

    return change


MISTAKES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "Redis by tag only": (
        "image.pinned",
        edit_compose(lambda services: services["redis"].update(image="redis:7.4.3")),
    ),
    "a data folder that is not committed": (
        "persistence.missing_source",
        lambda package: shutil.rmtree(package / "data" / "redis"),
    ),
    "shell options in exports.sh": ("exports.shell_options", prepend_to_exports("set -e")),
    "a cd in exports.sh": ("exports.cd", prepend_to_exports("cd /tmp")),
    "an icon in the package": (
        "package.review_assets",
        lambda package: (package / "icon.svg").write_text("<svg/>"),
    ),
    "a one-shot without a restart policy": (
        "service.restart",
        edit_compose(lambda services: services[ONE_SHOT].pop("restart")),
    ),
    "waiting for a Redis without a healthcheck": (
        "service.depends_on",
        edit_compose(lambda services: services["redis"].pop("healthcheck")),
    ),
    "Core Lightning's port as the manifest port": (
        "manifest.port_unique",
        edit_manifest(lambda app: app.update(port=2103)),
    ),
    "a gallery in a new submission": (
        "manifest.gallery",
        edit_manifest(lambda app: app.update(gallery=["1.jpg"])),
    ),
    "two services publishing one host port": (
        "ports.unique",
        edit_compose(
            lambda services: [
                services[name].update(ports=["8123:8000"]) for name in ("web", "engine")
            ]
        ),
    ),
    "a service publishing app_proxy's port": (
        "ports.app_proxy",
        edit_compose(lambda services: services["web"].update(ports=["3410:8000"])),
    ),
    "a dependency that is not in the store": (
        "manifest.dependencies",
        edit_manifest(lambda app: app.update(dependencies=["c-lightning"])),
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_the_ported_linter_reports_what_umbrels_linter_reports(
    mistake: str, tmp_path: Path
) -> None:
    rule, make_mistake = MISTAKES[mistake]
    package = tmp_path / APP_ID
    shutil.copytree(UMBREL_DIR, package)
    assert {finding.rule for finding in lint_app(package, APP_ID)} == {"image.pinned"}
    make_mistake(package)
    assert rule in {finding.rule for finding in lint_app(package, APP_ID)}


# What umbrelOS runs


def test_it_has_the_services_umbrel_runs() -> None:
    assert set(services()) == {"app_proxy", ONE_SHOT, *LONG_RUNNING}


def test_it_lets_everyone_reach_sovereigns_own_login_through_app_proxy() -> None:
    proxy = environment(services()["app_proxy"])
    assert proxy["APP_HOST"] == f"{APP_ID}_web_1"  # how Umbrel names containers
    assert proxy["APP_PORT"] == environment(services()["web"])["SOVEREIGN_PORT"]
    # Nostr login for the household, API keys for /v1: no Umbrel password in front.
    assert proxy["PROXY_AUTH_ADD"] == "false"


def test_it_shows_the_owner_the_setup_secret_as_the_app_password() -> None:
    assert manifest()["deterministicPassword"] is True
    for name in LIGHTNING_CLIENTS:
        assert environment(services()[name])["SOVEREIGN_SETUP_SECRET"] == "${APP_PASSWORD}"


def test_it_restarts_every_service_on_failure() -> None:
    for name, service in services().items():
        if name != "app_proxy":
            assert service.get("restart") == "on-failure", name


def test_it_waits_only_for_services_that_can_say_they_are_ready() -> None:
    for name, service in services().items():
        for target, condition in dependencies(service).items():
            assert condition in ("service_healthy", "service_completed_successfully"), (
                name,
                target,
            )
            if condition == "service_healthy":
                assert "test" in (services()[target].get("healthcheck") or {}), (name, target)
            else:
                assert target == ONE_SHOT, (name, target)


def test_it_keeps_data_only_in_committed_folders_under_the_app_data_dir() -> None:
    for name, service in services().items():
        assert "build" not in service, f"{name} must use a prebuilt image"
        for source, _target, options in mounts(service):
            if source == "${APP_CORE_LIGHTNING_DATA_DIR}":
                assert (name, options) == (ONE_SHOT, "ro")
                continue
            assert source.startswith("${APP_DATA_DIR}/data/"), (name, source)
            folder = UMBREL_DIR / source.removeprefix("${APP_DATA_DIR}/")
            assert (folder / ".gitkeep").is_file(), f"{folder} is not committed"


def test_the_package_holds_exactly_what_umbrel_installs() -> None:
    files = {path.relative_to(UMBREL_DIR).as_posix() for path in UMBREL_DIR.rglob("*")}
    assert {name for name in files if (UMBREL_DIR / name).is_file()} == {
        "umbrel-app.yml", "docker-compose.yml", "exports.sh",
        "data/sovereign/.gitkeep", "data/redis/.gitkeep", "data/lightning/.gitkeep",
    }  # fmt: skip


def test_the_icon_and_screenshots_for_the_pull_request_sit_beside_the_package() -> None:
    # Umbrel makes and hosts the store's images from those attached to the pull request.
    icon = (PULL_REQUEST_DIR / "icon.svg").read_text()
    assert re.search(r'<svg [^>]*width="256" height="256" viewBox="0 0 64 64"', icon)
    gallery = sorted((PULL_REQUEST_DIR / "gallery").iterdir())
    assert [path.name for path in gallery] == ["1.png", "2.png", "3.png"]
    for path in gallery:
        header = path.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n", path.name
        assert struct.unpack(">II", header[16:24]) == (1440, 900), path.name


def test_it_mounts_the_data_volume_where_sovereign_keeps_its_data() -> None:
    for name in (*LIGHTNING_CLIENTS, "engine"):
        service = services()[name]
        env = environment(service)
        assert env.get("REDIS_URL") and env.get("SOVEREIGN_DATA_DIR"), name
        assert env["SOVEREIGN_DATA_DIR"] in [target for _, target, _ in mounts(service)], name


def test_it_runs_sovereign_from_the_image_the_release_step_pins() -> None:
    for name in (*LIGHTNING_CLIENTS, "engine", ONE_SHOT):
        # The release step finds this exact form and appends @sha256:<digest>.
        assert services()[name]["image"] == f"{SOVEREIGN_IMAGE}:{manifest()['version']}", name


def test_it_runs_redis_pinned_by_tag_and_digest() -> None:
    assert services()["redis"]["image"] == REDIS_IMAGE


def test_it_gives_redis_its_own_password_that_web_and_worker_connect_with() -> None:
    redis = services()["redis"]
    password = re.search(r"--requirepass\s+(\S+)", redis["command"])
    assert password, "redis must start with --requirepass"
    assert environment(redis)["REDIS_PASSWORD"] == password[1]  # used by its healthcheck
    assert password[1] == "${APP_SOVEREIGN_REDIS_PASSWORD}"  # not the setup secret
    for name in (*LIGHTNING_CLIENTS, "engine", ONE_SHOT):
        url = urlsplit(environment(services()[name])["REDIS_URL"])
        assert url.password == password[1], name
        assert url.hostname == f"{APP_ID}_redis_1", name


def test_it_trusts_origins_on_the_manifest_port() -> None:
    origins = environment(services()["web"])["SOVEREIGN_CSRF_TRUSTED_ORIGINS"].split(",")
    ports = {origin.rsplit(":", 1)[1] for origin in origins if re.search(r":\d+$", origin)}
    assert ports == {str(manifest()["port"])}
    exports = (UMBREL_DIR / "exports.sh").read_text()
    assert f'APP_SOVEREIGN_PORT="{manifest()["port"]}"' in exports


def test_it_sets_only_settings_that_sovereign_reads() -> None:
    known = settings_reads()
    for name in (*LIGHTNING_CLIENTS, "engine", ONE_SHOT):
        env = environment(services()[name])
        ours = {key for key in env if key.startswith("SOVEREIGN_") or key in OTHER_SETTINGS}
        assert ours - known == set(), f"{name} sets settings nothing reads"


# Core Lightning


def test_it_depends_on_core_lightning_and_uses_only_what_it_exports() -> None:
    assert manifest()["dependencies"] == ["core-lightning"]
    used = variables_in(load_yaml(UMBREL_DIR / "docker-compose.yml"))
    lightning = {name for name in used if "CORE_LIGHTNING" in name}
    assert lightning <= CORE_LIGHTNING_EXPORTS
    assert lightning == CORE_LIGHTNING_USED


def test_only_the_one_shot_that_makes_the_rune_runs_as_root() -> None:
    users = {
        name: service.get("user") for name, service in services().items() if name != "app_proxy"
    }
    assert users.pop(ONE_SHOT) == "0:0"  # lightningd's socket is root's, mode 0600
    assert set(users.values()) == {"1000:1000"}


def test_the_one_shot_leaves_a_rune_and_the_ca_for_sovereign_in_its_data() -> None:
    one_shot = services()[ONE_SHOT]
    network = "${APP_CORE_LIGHTNING_BITCOIN_NETWORK}"
    assert one_shot["command"] == [
        "python", "manage.py", "wallet", "rune",
        "--socket", f"/cln/{network}/lightning-rpc",
        "--ca", f"/cln/{network}/ca.pem",
        "--to", "/lightning",
        "--owner", "1000:1000", "--optional",
    ]  # fmt: skip
    # Root never touches Sovereign's data: Django's own data directory (database, key) is a
    # throwaway one, and only the rune's folder is mounted.
    assert environment(one_shot)["SOVEREIGN_DATA_DIR"] == "/tmp/lightning-access"
    assert sorted(mounts(one_shot)) == [
        ("${APP_CORE_LIGHTNING_DATA_DIR}", "/cln", "ro"),
        ("${APP_DATA_DIR}/data/lightning", "/lightning", ""),
    ]
    assert "healthcheck" not in one_shot and "ports" not in one_shot


def test_the_engine_never_sees_the_rune() -> None:
    engine = services()["engine"]
    assert not any("lightning" in source for source, _, _ in mounts(engine))
    assert not any(name.startswith("SOVEREIGN_LIGHTNING") for name in environment(engine))


def test_a_backup_never_carries_the_rune() -> None:
    assert "data/lightning/*" in manifest()["backupIgnore"]


def test_web_and_worker_reach_core_lightning_over_clnrest_with_that_rune() -> None:
    for name in LIGHTNING_CLIENTS:
        service = services()[name]
        env = environment(service)
        assert dependencies(service)[ONE_SHOT] == "service_completed_successfully", name
        url = "https://${APP_CORE_LIGHTNING_DAEMON_IP}:${CORE_LIGHTNING_REST_PORT}"
        assert env["SOVEREIGN_LIGHTNING_REST_URL"] == url, name
        assert env["SOVEREIGN_LIGHTNING_RUNE_FILE"] == "/lightning/rune", name
        assert env["SOVEREIGN_LIGHTNING_REST_CA"] == "/lightning/ca.pem", name
        assert ("${APP_DATA_DIR}/data/lightning", "/lightning", "ro") in mounts(service), name
        assert "SOVEREIGN_LIGHTNING_RPC" not in env, name  # the socket stays root's
        assert not any(source.startswith("${APP_CORE") for source, _, _ in mounts(service)), name


# exports.sh, sourced as umbrelOS sources it, and the compose file rendered with the result

DEVICE_SEED = "5c2ad0dc6c3f1ef0b4a2e5b1e4d8c0f3a6b9d2e5f8a1b4c7d0e3f6a9b2c5d8e1"
# Part of legacy-compat/app-script in getumbrel/umbrel (1.7.2): the same shell options, the
# same derive_entropy, and exports.sh sourced inside a function that declares
# app_entropy_identifier, after the exports of the apps it depends on.
SOURCE_APP = r"""
set -euo pipefail
derive_entropy () {
  identifier="${1}"
  umbrel_seed=$(cat "${SEED_FILE}") || true
  if [[ -z "$umbrel_seed" ]] || [[ -z "$identifier" ]]; then
    >&2 echo "Missing derivation parameter, this is unsafe, exiting."
    exit 1
  fi
  printf "%s" "${identifier}" | openssl dgst -sha256 -hmac "${umbrel_seed}" | sed 's/^.* //'
}
source_app() {
  local -r app="${1}"
  local -r app_entropy_identifier="app-${app}-seed"
  export DEVICE_HOSTNAME="umbrel"
  export DEVICE_DOMAIN_NAME="${DEVICE_HOSTNAME}.local"
  compgen -v | sort > "${VARIABLES_BEFORE}"
  . "${EXPORTS_APP_FILE}"
  compgen -v | sort > "${VARIABLES_AFTER}"
  export APP_ID="${app}"
  export APP_DATA_DIR="/home/umbrel/umbrel/app-data/${app}"
  export APP_PROXY_PORT="3410"
  export APP_HIDDEN_SERVICE="not-enabled.onion"
  export APP_SEED=$(derive_entropy "${app_entropy_identifier}")
  export APP_PASSWORD=$(derive_entropy "${app_entropy_identifier}-APP_PASSWORD")
}
source_app sovereign
env -0
"""
# What core-lightning's exports.sh leaves for its dependents on mainnet.
CORE_LIGHTNING_ENVIRONMENT = {
    "APP_CORE_LIGHTNING_IP": "10.21.21.94",
    "APP_CORE_LIGHTNING_PORT": "2103",
    "APP_CORE_LIGHTNING_DAEMON_IP": "10.21.21.96",
    "APP_CORE_LIGHTNING_DAEMON_PORT": "9736",
    "APP_CORE_LIGHTNING_DAEMON_GRPC_PORT": "2110",
    "APP_CORE_LIGHTNING_WEBSOCKET_PORT": "2106",
    "APP_CORE_LIGHTNING_DATA_DIR": "/home/umbrel/umbrel/app-data/core-lightning/data/lightningd",
    "CORE_LIGHTNING_REST_PORT": "2107",
    "APP_CORE_LIGHTNING_BITCOIN_NETWORK": "bitcoin",
    "APP_CORE_LIGHTNING_HIDDEN_SERVICE": "notyetset.onion",
    "APP_CONFIG_DIR": "/data/app",
    "APP_MODE": "production",
    "CORE_LIGHTNING_PATH": "/root/.lightning",
    "COMMANDO_CONFIG": "/root/.lightning/.commando-env",
}


class Sourced:
    """The environment after umbrelOS sourced exports.sh, and the shell variables it added."""

    def __init__(self, environment: dict[str, str], added: set[str]) -> None:
        self.environment = environment
        self.added = added


def source_exports(tmp_path: Path, seed: str = DEVICE_SEED) -> Sourced:
    (tmp_path / "seed").write_text(seed)
    # The device's addresses, as `hostname --all-ip-addresses` prints them.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "hostname").write_text("#!/bin/sh\necho '192.168.1.20 fd00::20 '\n")
    (fake_bin / "hostname").chmod(0o755)
    files = {
        "SEED_FILE": tmp_path / "seed",
        "EXPORTS_APP_FILE": UMBREL_DIR / "exports.sh",
        "VARIABLES_BEFORE": tmp_path / "before",
        "VARIABLES_AFTER": tmp_path / "after",
    }
    shell_environment = {
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        **CORE_LIGHTNING_ENVIRONMENT,
        **{name: str(path) for name, path in files.items()},
    }
    result = subprocess.run(
        ["bash", "-c", SOURCE_APP], env=shell_environment, capture_output=True, check=True
    )
    pairs = (entry.split("=", 1) for entry in result.stdout.decode().split("\0") if entry)
    before = set(files["VARIABLES_BEFORE"].read_text().split())
    added = set(files["VARIABLES_AFTER"].read_text().split()) - before
    return Sourced(dict(pairs), added)


def interpolate(value: object, environment: dict[str, str], unset: set[str]) -> object:
    """Compose's substitution: ${NAME}, $NAME and $$ (a literal dollar); unset names noted."""
    if isinstance(value, dict):
        return {key: interpolate(item, environment, unset) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environment, unset) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name is None:
            return "$"
        if name not in environment:
            unset.add(name)
        return environment.get(name, "")

    return VARIABLE.sub(substitute, value)


def test_umbrel_can_source_exports_with_its_shell_options(tmp_path: Path) -> None:
    sourced = source_exports(tmp_path)
    assert sourced.added == {
        "APP_SOVEREIGN_PORT", "APP_SOVEREIGN_REDIS_PASSWORD", "APP_SOVEREIGN_LOCAL_URLS",
    }  # fmt: skip
    assert sourced.environment["APP_SOVEREIGN_LOCAL_URLS"] == (
        "http://192.168.1.20:3410,http://[fd00::20]:3410"
    )


def test_it_derives_redis_its_own_password_from_the_device_seed(tmp_path: Path) -> None:
    env = source_exports(tmp_path).environment
    expected = hmac.new(DEVICE_SEED.encode(), b"app-sovereign-seed-redis", hashlib.sha256)
    assert env["APP_SOVEREIGN_REDIS_PASSWORD"] == expected.hexdigest()
    assert env["APP_SOVEREIGN_REDIS_PASSWORD"] != env["APP_PASSWORD"]


def test_it_stops_umbrel_rather_than_start_redis_without_a_password(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        source_exports(tmp_path, seed="")
    assert b"Missing derivation parameter" in failed.value.stderr


def test_the_compose_file_rendered_with_umbrels_environment_leaves_nothing_unset(
    tmp_path: Path,
) -> None:
    env = source_exports(tmp_path).environment
    unset: set[str] = set()
    rendered = interpolate(load_yaml(UMBREL_DIR / "docker-compose.yml"), env, unset)
    assert unset == set()
    assert isinstance(rendered, dict)
    web = environment(rendered["services"]["web"])
    assert web["SOVEREIGN_LIGHTNING_REST_URL"] == "https://10.21.21.96:2107"
    assert urlsplit(web["REDIS_URL"]).password == env["APP_SOVEREIGN_REDIS_PASSWORD"]
    assert web["SOVEREIGN_SETUP_SECRET"] == env["APP_PASSWORD"]
    assert "http://192.168.1.20:3410" in web["SOVEREIGN_CSRF_TRUSTED_ORIGINS"].split(",")
    one_shot = rendered["services"][ONE_SHOT]
    assert "/cln/bitcoin/lightning-rpc" in one_shot["command"]
    lightning_dir = CORE_LIGHTNING_ENVIRONMENT["APP_CORE_LIGHTNING_DATA_DIR"]
    assert f"{lightning_dir}:/cln:ro" in one_shot["volumes"]


# Umbrel's own linter, when a checkout of umbrel-apps is at hand (`make lint-umbrel`)


@pytest.mark.skipif(
    not os.environ.get("UMBREL_APPS_CHECKOUT"),
    reason="set UMBREL_APPS_CHECKOUT to a checkout of getumbrel/umbrel-apps after `npm ci`",
)
@pytest.mark.parametrize("mistake", [None, *MISTAKES])
def test_umbrels_real_linter_agrees_with_the_port(mistake: str | None, tmp_path: Path) -> None:
    checkout = Path(os.environ["UMBREL_APPS_CHECKOUT"]).resolve()
    store = tmp_path / "umbrel-apps"
    # A pull request adding sovereign/, linted as CI lints one (the app is new to the base).
    subprocess.run(["git", "clone", "--quiet", "--shared", checkout, store], check=True)
    (store / "node_modules").symlink_to(checkout / "node_modules")
    package = store / APP_ID
    shutil.copytree(UMBREL_DIR, package)
    if mistake:
        MISTAKES[mistake][1](package)
    git = ["git", "-C", str(store), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "add", APP_ID], check=True)
    subprocess.run([*git, "commit", "--quiet", "--message", "Add Sovereign"], check=True)
    linter = ["node", ".tools/lint-apps.mjs", "--root", ".", "--changed", "HEAD~1...HEAD"]
    result = subprocess.run(
        [*linter, "--format", "json"], cwd=store, capture_output=True, text=True, check=False
    )
    issues = json.loads(result.stdout)["issues"]
    real = sorted((issue["severity"], issue["rule"], issue["file"]) for issue in issues)
    ported = sorted((f.severity, f.rule, f.file) for f in lint_app(package, APP_ID))
    assert real == ported
