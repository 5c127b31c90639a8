"""The StartOS package (startos/): it type-checks and builds as start-cli would pack it, and
it runs Sovereign the way Sovereign reads its settings and reaches Core Lightning: over
CLNRest, with a rune a root oneshot makes, so that no uid-1000 process sees the node's files.

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
LIGHTNING_CLIENTS = ("web", "worker")  # the wallet's processes
ONE_SHOT = "lightning-access"
SOVEREIGN_UID = 1000  # the image's user (Dockerfile: USER 1000:1000)
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


def requirement_sets(daemon: Facts) -> list[list[str]]:
    """A daemon's `requires`, or both of `withLightning ? [...] : [...]`."""
    requires = daemon["requires"]
    return [requires["then"], requires["else"]] if "when" in requires else [requires]


def mounts_of(source: Facts, subcontainer: str, kind: str) -> list[Facts]:
    return [m for m in source["subcontainers"][subcontainer]["mounts"] if m["type"] == kind]


def command_options(command: list[str]) -> dict[str, str]:
    """`--name value` pairs of a command (flags map to "")."""
    options: dict[str, str] = {}
    for index, word in enumerate(command):
        if word.startswith("--"):
            following = command[index + 1] if index + 1 < len(command) else "--"
            options[word] = "" if following.startswith("--") else following
    return options


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
    for daemon in source["daemons"].values():  # a daemon's own inline env (the oneshot's)
        env = daemon.get("exec", {}).get("env", {})
        passed_names |= set(env) if "unevaluated" not in env else set()
    assert passed_names - settings_reads() == set()
    assert {
        "SOVEREIGN_DATA_DIR", "SOVEREIGN_SECRET_KEY", "SOVEREIGN_SETUP_SECRET", "REDIS_URL",
        "SOVEREIGN_ALLOWED_HOSTS", "SOVEREIGN_CSRF_TRUSTED_ORIGINS",
        "SOVEREIGN_LIGHTNING_REST_URL", "SOVEREIGN_LIGHTNING_RUNE_FILE",
    } <= passed_names  # fmt: skip
    # Never the socket (root's), and no CA: cln-startos serves CLNRest over plain HTTP.
    assert passed_names.isdisjoint({"SOVEREIGN_LIGHTNING_RPC", "SOVEREIGN_LIGHTNING_REST_CA"})


def test_sovereign_keeps_its_data_on_the_main_volume(source: Facts) -> None:
    assert source["env"]["SOVEREIGN_DATA_DIR"] == "/data"
    for name, container in source["subcontainers"].items():
        if container["imageId"] != "main":
            continue
        [data] = mounts_of(source, name, "volume")
        assert data["volumeId"] == "main" and data["subpath"] is None, name
        assert data["mountpoint"] == "/data" and data["readonly"] is False, name
        # Root's files shown as the image's user, except to the oneshot that runs as root.
        expected = None if name == ONE_SHOT else [{"fromId": 0, "toId": SOVEREIGN_UID}]
        assert data.get("idmap") == expected, name


def test_only_the_root_oneshot_sees_core_lightning_read_only_as_it_is_on_disk(
    source: Facts,
) -> None:
    seeing = {name for name in source["subcontainers"] if mounts_of(source, name, "dependency")}
    assert seeing == {ONE_SHOT}  # web, worker and engine never see the seed (hsm_secret)
    [cln] = mounts_of(source, ONE_SHOT, "dependency")
    assert cln["dependencyId"] == "c-lightning" and cln["volumeId"] == "main"
    assert cln["subpath"] is None and cln["readonly"] is True
    assert cln["mountpoint"] == "/mnt/cln" and "idmap" not in cln
    one_shot = source["daemons"][ONE_SHOT]
    assert one_shot["kind"] == "addOneshot" and one_shot["onlyWhen"] == "withLightning"
    assert one_shot["subcontainer"] == {"subcontainer": ONE_SHOT}
    assert one_shot["exec"]["user"] == "root"  # lightningd's socket is root's, mode 0600
    for name in ("web", "worker", "engine", "migrate"):
        assert "user" not in source["daemons"][name]["exec"], name  # the image's: 1000
    constants = source["constants"]
    assert constants["clnPackageId"] == cln["dependencyId"]
    assert constants["clnVersionRange"] == ">=26.6.6:1"
    assert constants["clnRpcHealthCheck"] == "lightningd"  # cln-startos's RPC daemon


def test_the_oneshot_makes_the_rune_where_web_and_worker_read_it(source: Facts) -> None:
    one_shot = source["daemons"][ONE_SHOT]
    command = one_shot["exec"]["command"]
    assert command[:4] == ["python", "manage.py", "wallet", "rune"]
    options = command_options(command)
    # cln-startos's lightning-dir is its volume's root, on mainnet ("bitcoin"). No CA:
    # CLNRest is plain HTTP on StartOS's internal network.
    assert options["--socket"] == "/mnt/cln/bitcoin/lightning-rpc"
    assert "--ca" not in options
    assert options["--to"] == str(Path(source["env"]["SOVEREIGN_LIGHTNING_RUNE_FILE"]).parent)
    assert "--optional" in options  # a node still down is no error: Sovereign starts
    # The oneshot's ids are the disk's; web's id map shows disk uid 0 as Sovereign's user, and
    # any other disk uid as nobody. So the rune must be 0's on disk to be Sovereign's.
    [web_map] = mounts_of(source, "web", "volume")[0]["idmap"]
    owner_uid, owner_gid = options["--owner"].split(":")
    assert int(owner_uid) == int(owner_gid) == web_map["fromId"] == 0
    assert web_map["toId"] == SOVEREIGN_UID
    # Root makes nothing in Sovereign's data but the rune's folder: Django's own data
    # directory (database, key) is a throwaway one outside the mount.
    env = one_shot["exec"]["env"]
    assert set(env) == {"SOVEREIGN_DATA_DIR", "SOVEREIGN_SECRET_KEY"}
    assert env["SOVEREIGN_DATA_DIR"] == "/tmp/lightning-access"


def test_wallet_rune_takes_the_oneshots_arguments(source: Facts) -> None:
    from apps.wallet.management.commands.wallet import Command

    command = source["daemons"][ONE_SHOT]["exec"]["command"]
    parsed = Command().create_parser("manage.py", "wallet").parse_args(command[3:])
    assert parsed.action == "rune" and parsed.owner == "0:0" and parsed.optional is True


def test_web_and_worker_reach_core_lightning_over_clnrest_with_that_rune(source: Facts) -> None:
    # As ride-the-lightning-startos asks: CLNRest's plain-HTTP address on the LXC bridge.
    assert source["bridgeAddresses"] == [
        {"packageId": "c-lightning", "hostId": "clnrest", "internalPort": 3010, "ssl": False}
    ]
    url = source["env"]["SOVEREIGN_LIGHTNING_REST_URL"]
    assert url == {"unevaluated": "`http://${clnRest}`"}
    assert source["env"]["SOVEREIGN_LIGHTNING_RUNE_FILE"] == "/data/lightning/rune"
    daemons = source["daemons"]
    for name in LIGHTNING_CLIENTS:
        assert daemons[name]["exec"]["env"] == {"unevaluated": "nodeEnv"}, name
        with_node, without_node = requirement_sets(daemons[name])
        assert daemons[name]["requires"]["when"] == daemons[ONE_SHOT]["onlyWhen"], name
        assert ONE_SHOT in with_node and ONE_SHOT not in without_node, name
    assert daemons["engine"]["exec"]["env"] == {"unevaluated": "baseEnv"}


def test_it_asks_core_lightning_to_keep_clnrest_on(source: Facts) -> None:
    [task] = source["dependencyTasks"]
    assert task["packageId"] == "c-lightning"
    # cln-startos's Plugins action (startos/actions/config/plugins.ts) holds the toggle.
    assert task["action"]["id"] == "plugins"
    assert task["options"]["input"] == {
        "kind": "partial", "accept": [{"clnrest": True}], "set": {"clnrest": True}
    }  # fmt: skip
    assert task["options"]["when"] == {"condition": "input-not-matches", "once": False}
    assert task["severity"] != "critical"  # that would keep the owner's node from starting


def test_it_runs_each_sovereign_program_after_the_migrations(source: Facts) -> None:
    daemons = source["daemons"]
    assert daemons["migrate"]["kind"] == "addOneshot"
    assert daemons["migrate"]["exec"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    programs = {"web", "worker", "engine"}
    assert programs <= run_programs()
    for name in programs:
        assert daemons[name]["kind"] == "addDaemon", name
        assert daemons[name]["exec"]["command"] == ["python", "manage.py", "run", name]
        assert all("migrate" in needs for needs in requirement_sets(daemons[name])), name
    for name in LIGHTNING_CLIENTS:  # Celery's broker and the channel layer
        assert all("valkey" in needs for needs in requirement_sets(daemons[name])), name


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


def test_a_backup_leaves_out_the_rune_and_unfinished_downloads() -> None:
    backups = (PACKAGE / "startos" / "backups.ts").read_text()
    excluded = re.search(r"exclude:\s*\[([^\]]*)\]", backups)
    assert excluded is not None, "backups.ts names no exclusions"
    assert set(re.findall(r"'([^']+)'", excluded[1])) == {"models/*.gguf.part", "lightning/*"}
