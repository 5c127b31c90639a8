"""The Umbrel package and the Docker image: what the app store's linter and umbrelOS need."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
VALID_CATEGORIES = {
    "ai", "automation", "bitcoin", "crypto", "developer", "files", "finance", "media",
    "networking", "social",
}  # fmt: skip
REQUIRED_MANIFEST_FIELDS = {
    "manifestVersion", "id", "category", "name", "version", "tagline", "description",
    "releaseNotes", "developer", "website", "dependencies", "repo", "support", "port",
    "gallery", "path", "submitter", "submission",
}  # fmt: skip
SOVEREIGN_SERVICES = ("web", "worker")


def load_yaml(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict), f"{name} is not a YAML mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    return load_yaml("docker-compose.yml")["services"]


def manifest() -> dict[str, Any]:
    return load_yaml("umbrel-app.yml")


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


# Sovereign's settings whose names are the usual ones, without the SOVEREIGN_ prefix.
OTHER_SETTINGS = {"REDIS_URL", "DATABASE_URL"}


def settings_reads() -> set[str]:
    source = (ROOT / "sovereign" / "settings.py").read_text()
    return set(re.findall(r'(?:env_\w+|secret_key)\(\s*"([A-Z_]+)"', source))


def readme_settings_table() -> set[str]:
    readme = ROOT / "README.md"
    assert readme.exists(), "README.md is missing: it documents the settings table"
    names = set()
    for line in readme.read_text().splitlines():
        cells = line.split("|")
        if line.lstrip().startswith("|") and len(cells) > 2:
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1]))
    return {name for name in names if name.startswith("SOVEREIGN_") or name in OTHER_SETTINGS}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest)
        for word, rest in (line.split(None, 1) for line in lines if line and line[0] != "#")
    ]


def dockerfile_final_stage() -> list[tuple[str, str]]:
    """The instructions after the last FROM."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from + 1 :]


def test_it_has_the_services_umbrel_runs() -> None:
    assert {"app_proxy", "web", "worker", "redis"} <= services().keys()


def test_it_points_app_proxy_at_the_port_the_web_service_listens_on() -> None:
    proxy = environment(services()["app_proxy"])
    assert proxy["APP_HOST"] == f"{manifest()['id']}_web_1"  # how Umbrel names containers
    assert proxy["APP_PORT"] == environment(services()["web"])["SOVEREIGN_PORT"]
    assert "PROXY_AUTH_ADD" not in proxy  # the Umbrel login protects the app


def test_it_restarts_every_long_running_service_on_failure() -> None:
    for name, service in services().items():
        if name != "app_proxy":
            assert service.get("restart") == "on-failure", name


def test_it_waits_only_for_services_that_have_a_healthcheck() -> None:
    for name, service in services().items():
        for target, condition in dependencies(service).items():
            assert target in services(), f"{name} depends on unknown {target}"
            if condition == "service_healthy":
                assert "test" in (services()[target].get("healthcheck") or {}), (name, target)


def test_it_keeps_data_only_in_bind_mounts_under_the_app_data_dir() -> None:
    for name, service in services().items():
        assert "build" not in service, f"{name} must use a prebuilt image"
        for volume in service.get("volumes", []):
            assert isinstance(volume, str), f"{name}: use short-syntax volumes"
            source = volume.split(":", 1)[0].rstrip("/")
            assert source.startswith("${APP_DATA_DIR}/data/"), (name, volume)
            assert "docker.sock" not in volume, (name, volume)


def test_it_mounts_the_data_volume_where_sovereign_keeps_its_data() -> None:
    for name in SOVEREIGN_SERVICES:
        service = services()[name]
        env = environment(service)
        assert env.get("REDIS_URL") and env.get("SOVEREIGN_DATA_DIR"), name
        targets = [volume.split(":")[1] for volume in service["volumes"]]
        assert env["SOVEREIGN_DATA_DIR"] in targets, name


def test_it_runs_web_and_worker_from_the_image_of_the_manifest_version() -> None:
    images = {services()[name]["image"].split("@")[0] for name in SOVEREIGN_SERVICES}
    assert images == {f"ghcr.io/sovereign-node/sovereign:{manifest()['version']}"}


def test_it_gives_redis_the_password_web_and_worker_connect_with() -> None:
    redis = services()["redis"]
    password = re.search(r"--requirepass\s+(\S+)", redis["command"])
    assert password, "redis must start with --requirepass"
    assert environment(redis)["REDIS_PASSWORD"] == password[1]  # used by its healthcheck
    for name in SOVEREIGN_SERVICES:
        url = urlsplit(environment(services()[name])["REDIS_URL"])
        assert url.password == password[1], name
        assert url.hostname == f"{manifest()['id']}_redis_1", name


def test_it_trusts_origins_on_the_manifest_port() -> None:
    origins = environment(services()["web"])["SOVEREIGN_CSRF_TRUSTED_ORIGINS"].split(",")
    ports = {origin.rsplit(":", 1)[1] for origin in origins if re.search(r":\d+$", origin)}
    assert ports == {str(manifest()["port"])}
    exports = (ROOT / "exports.sh").read_text()
    assert f'APP_SOVEREIGN_PORT="{manifest()["port"]}"' in exports


def test_it_sets_only_settings_that_sovereign_reads() -> None:
    known = settings_reads()
    for name in SOVEREIGN_SERVICES:
        env = environment(services()[name])
        ours = {key for key in env if key.startswith("SOVEREIGN_") or key in OTHER_SETTINGS}
        assert ours - known == set(), f"{name} sets settings nothing reads"


def test_it_reads_every_setting_the_readme_documents() -> None:
    assert readme_settings_table() - settings_reads() == set()


def test_it_documents_every_setting_it_reads_in_the_readme() -> None:
    assert settings_reads() - readme_settings_table() == set()


def test_it_has_a_manifest_the_umbrel_linter_accepts() -> None:
    app = manifest()
    assert REQUIRED_MANIFEST_FIELDS - app.keys() == set()
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", app["id"])
    assert app["category"] in VALID_CATEGORIES
    assert isinstance(app["port"], int) and 1 <= app["port"] <= 65535
    assert app["port"] not in (80, 443, 2000)  # umbrelOS's own ports
    assert app["releaseNotes"] == ""  # required for a new app
    assert isinstance(app["dependencies"], list) and isinstance(app["gallery"], list)
    assert app["path"] == "" or app["path"].startswith("/")
    for field in ("website", "support", "submission"):
        assert app[field].startswith("https://"), field
    assert isinstance(app["version"], str) and app["version"] != "latest"


def test_it_builds_an_image_that_runs_sovereign_as_a_non_root_user() -> None:
    stage = dockerfile_final_stage()
    users = [rest.split(":")[0] for word, rest in stage if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = dict(
        item.split("=", 1) for word, rest in stage if word == "ENV" for item in shlex.split(rest)
    )
    exposed = [port for word, rest in stage if word == "EXPOSE" for port in rest.split()]
    assert env["SOVEREIGN_PORT"] in exposed
    command = json.loads(next(rest for word, rest in stage if word == "CMD"))
    assert command[command.index("manage.py") + 1] == "run"


def test_the_image_installs_llama_cpp_from_the_build_that_leaves_amx_out() -> None:
    runs = [rest for word, rest in dockerfile_instructions() if word == "RUN"]
    built = next(i for i, run in enumerate(runs) if "sovereign/llama_build.py" in run)
    installed = next(i for i, run in enumerate(runs) if re.search(r"pip install \S*\.", run))
    assert built < installed  # otherwise pip compiles llama.cpp itself, with AMX


def test_it_bakes_no_data_directory_into_the_image() -> None:
    run = next(rest for word, rest in dockerfile_final_stage() if "collectstatic" in rest)
    build_data = re.search(r"SOVEREIGN_DATA_DIR=(\S+)", run)
    assert build_data and f"rm -rf {build_data[1]}" in run  # its secret key goes with it


def test_it_has_an_exports_file_umbrel_can_source() -> None:
    lines = (ROOT / "exports.sh").read_text().splitlines()
    assert not [line for line in lines if re.match(r"\s*(exit|cd)\b|\s*set\s+-", line)]
    exported = [re.match(r"\s*export\s+(\w+)", line) for line in lines]
    names = [match[1] for match in exported if match]
    assert names and all(name.startswith("APP_SOVEREIGN_") for name in names)
