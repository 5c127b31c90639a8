"""The StartOS package (startos/): it type-checks and builds as start-cli would pack it, and
it runs Sovereign the way Sovereign reads its settings and reaches Core Lightning.

`make test` installs the package's node_modules first (npm ci, from its package-lock.json).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "startos"
SOURCE_READER = Path(__file__).with_name("startos_source.cjs")
ARCHES = {"x86_64", "aarch64"}
# What the TypeScript compiler and node report: JSON objects.
Facts = dict[str, Any]
IMAGE = re.compile(r"ghcr\.io/sovereign-node/sovereign:(?P<tag>[^@\s]+)(@sha256:[0-9a-f]{64})?")


def npm(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["npm", *args], cwd=PACKAGE, capture_output=True, text=True, timeout=timeout
    )


def assert_passed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module", autouse=True)
def node_modules() -> None:
    if not (PACKAGE / "node_modules" / ".bin" / "tsc").exists():
        pytest.fail("startos/node_modules is missing: run `make test` (or npm ci in startos/)")


@pytest.fixture(scope="module")
def built_manifest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The manifest of the JavaScript `npm run build` makes, the one start-cli packs."""
    out = tmp_path_factory.mktemp("startos-js")
    ncc = PACKAGE / "node_modules" / ".bin" / "ncc"
    build = subprocess.run(
        [ncc, "build", "startos/index.ts", "-o", out], cwd=PACKAGE, capture_output=True, text=True
    )
    assert_passed(build)
    script = "process.stdout.write(JSON.stringify(require(process.argv[1]).manifest))"
    loaded = subprocess.run(
        ["node", "-e", script, out / "index.js"], capture_output=True, text=True, check=True
    )
    manifest: dict[str, Any] = json.loads(loaded.stdout)
    return manifest


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    """main.ts's environment, mounts and daemons, read by the TypeScript compiler."""
    read = subprocess.run(
        ["node", SOURCE_READER, PACKAGE], capture_output=True, text=True, check=True
    )
    facts: dict[str, Any] = json.loads(read.stdout)
    return facts


def settings_reads() -> set[str]:
    settings = (ROOT / "sovereign" / "settings.py").read_text()
    return set(re.findall(r'(?:env_\w+|secret_key)\(\s*"([A-Z_]+)"', settings))


def run_programs() -> set[str]:
    """PROGRAMS in `manage.py run`: the processes it can start on their own."""
    run = ROOT / "apps" / "system" / "management" / "commands" / "run.py"
    for node in ast.parse(run.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PROGRAMS":
            return set(ast.literal_eval(node.value))
    raise AssertionError("run.py has no PROGRAMS")


def project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def test_the_package_type_checks() -> None:
    assert_passed(npm("run", "check"))


def test_the_package_passes_the_lint_the_sdk_runs_before_building() -> None:
    assert_passed(npm("run", "lint"))


def test_it_packs_the_app_and_version_the_umbrel_package_has(built_manifest: Facts) -> None:
    umbrel = yaml.safe_load((ROOT / "umbrel" / "umbrel-app.yml").read_text())
    assert built_manifest["id"] == umbrel["id"] == "sovereign"
    upstream, revision = built_manifest["version"].split(":")
    assert upstream == project_version() and revision.isdigit()


def test_it_runs_the_release_image_of_that_version(built_manifest: Facts) -> None:
    images = built_manifest["images"]
    image = IMAGE.fullmatch(images["main"]["source"]["dockerTag"])
    assert image, "the release step rewrites only ghcr.io/sovereign-node/sovereign:<version>"
    assert image["tag"] == project_version()
    valkey = images["valkey"]["source"]["dockerTag"]
    assert re.fullmatch(r"valkey/valkey:\d+\.\d+\.\d+(-alpine)?", valkey), "pin a release"
    for name, spec in images.items():
        assert set(spec["arch"]) == ARCHES, name


def test_it_depends_on_core_lightning_only_when_chosen(built_manifest: Facts) -> None:
    assert built_manifest["volumes"] == ["main"]
    assert built_manifest["dependencies"].keys() == {"c-lightning"}
    assert built_manifest["dependencies"]["c-lightning"]["optional"] is True


def test_main_passes_only_settings_that_sovereign_reads(source: Facts) -> None:
    passed_names = set(source["env"])
    assert passed_names - settings_reads() == set()
    assert {
        "SOVEREIGN_DATA_DIR", "SOVEREIGN_SECRET_KEY", "SOVEREIGN_SETUP_SECRET", "REDIS_URL",
        "SOVEREIGN_ALLOWED_HOSTS", "SOVEREIGN_CSRF_TRUSTED_ORIGINS", "SOVEREIGN_LIGHTNING_RPC",
    } <= passed_names  # fmt: skip


def test_sovereign_keeps_its_data_on_the_main_volume(source: Facts) -> None:
    [data] = [mount for mount in source["volumeMounts"] if mount["volumeId"] == "main"]
    assert data["subpath"] is None and data["readonly"] is False
    assert source["env"]["SOVEREIGN_DATA_DIR"] == data["mountpoint"] == "/data"


def test_it_mounts_core_lightning_read_only_where_the_socket_setting_points(
    source: Facts,
) -> None:
    [cln] = source["dependencyMounts"]
    assert cln["dependencyId"] == "c-lightning" and cln["volumeId"] == "main"
    assert cln["subpath"] is None and cln["readonly"] is True
    assert cln["mountpoint"] == "/mnt/cln"
    # cln-startos's lightning-dir is its volume's root, and it runs on mainnet ("bitcoin").
    assert source["env"]["SOVEREIGN_LIGHTNING_RPC"] == "/mnt/cln/bitcoin/lightning-rpc"
    constants = source["constants"]
    assert constants["clnPackageId"] == cln["dependencyId"]
    assert constants["clnVersionRange"] == ">=26.6.6:1"
    assert constants["clnRpcHealthCheck"] == "lightningd"  # cln-startos's RPC daemon


def test_it_runs_each_sovereign_program_after_the_migrations(source: Facts) -> None:
    daemons = source["daemons"]
    assert daemons["migrate"]["kind"] == "addOneshot"
    assert daemons["migrate"]["exec"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    programs = {"web", "worker", "engine"}
    assert programs <= run_programs()
    for name in programs:
        assert daemons[name]["kind"] == "addDaemon", name
        assert daemons[name]["exec"]["command"] == ["python", "manage.py", "run", name]
        assert "migrate" in daemons[name]["requires"], name
    for name in ("web", "worker"):  # Celery's broker and the channel layer
        assert "valkey" in daemons[name]["requires"], name


def test_web_and_worker_reach_the_valkey_it_starts(source: Facts) -> None:
    command = source["daemons"]["valkey"]["exec"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    url = urlsplit(source["env"]["REDIS_URL"])
    assert url.hostname == options["--bind"] == "127.0.0.1"  # nothing outside the service
    assert str(url.port) == options["--port"]


def test_it_listens_on_the_port_its_interface_binds(source: Facts) -> None:
    assert source["boundPorts"] == [int(source["env"]["SOVEREIGN_PORT"])]
    # StartOS's proxy comes over the LXC bridge, not loopback.
    assert source["env"]["SOVEREIGN_HOST"] == "0.0.0.0"  # noqa: S104
