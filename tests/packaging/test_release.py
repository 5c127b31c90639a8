"""The release step pins the pushed image into both packages, and changes nothing when it must
not: checked on small copies of the files in the shapes the Umbrel and StartOS packages use."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from sovereign import release
from sovereign.release import ReleaseError

ROOT = Path(__file__).resolve().parent.parent.parent
IMAGE = "ghcr.io/sovereign-node/sovereign"
OLD_DIGEST = "sha256:" + "1" * 64
DIGEST = "sha256:" + "ab" * 32
REDIS = "redis:7.4.3@sha256:ee8ec723c831b815c3e2f2c6fbd1c145c68d1c04ba284f044ec1434fbca0fee8"
COMPOSE = f"""version: "3.7"
# The release step rewrites each {IMAGE}:<version> below to its pinned digest.
services:
  web:
    image: {IMAGE}:0.1.0
  worker:
    image: {IMAGE}:0.1.0@{OLD_DIGEST}
  redis:
    image: {REDIS}
"""
MANIFEST = """manifestVersion: 1
id: sovereign
name: Sovereign
version: "0.1.0"
dependencies:
  - core-lightning
"""
STARTOS_MANIFEST = f"""export const manifest = setupManifest({{
  id: 'sovereign',
  images: {{
    main: {{
      source: {{ dockerTag: '{IMAGE}:0.1.0' }},
      arch: ['x86_64', 'aarch64'],
    }},
  }},
}})
"""
STARTOS_MAIN = f"""// runs the image {IMAGE}:0.1.0 as web, worker and engine
export const main = sdk.setupMain(async ({{ effects }}) => daemons(effects))
"""
DEPENDENCY = f"export declare const example = '{IMAGE}:9.9.9'\n"


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    files = {
        "umbrel/docker-compose.yml": COMPOSE,
        "umbrel/umbrel-app.yml": MANIFEST,
        "startos/manifest/index.ts": STARTOS_MANIFEST,
        "startos/main.ts": STARTOS_MAIN,
        "startos/node_modules/some-package/index.d.ts": DEPENDENCY,
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def contents(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): path.read_text() for path in root.rglob("*.*")}


def test_it_pins_every_reference_to_the_version_and_index_digest_and_bumps_the_app(
    packages: Path,
) -> None:
    release.apply(release.rewrites(packages, "0.2.0", DIGEST))

    pinned = f"{IMAGE}:0.2.0@{DIGEST}"
    assert (packages / "umbrel/docker-compose.yml").read_text() == COMPOSE.replace(
        f"{IMAGE}:0.1.0@{OLD_DIGEST}", pinned
    ).replace(f"{IMAGE}:0.1.0", pinned)
    assert f"dockerTag: '{pinned}' }}," in (packages / "startos/manifest/index.ts").read_text()
    assert f"the image {pinned} as web" in (packages / "startos/main.ts").read_text()
    assert (packages / "umbrel/umbrel-app.yml").read_text() == MANIFEST.replace(
        'version: "0.1.0"', 'version: "0.2.0"'
    )


def test_it_leaves_other_images_prose_and_installed_npm_packages_alone(packages: Path) -> None:
    release.apply(release.rewrites(packages, "0.2.0", DIGEST))

    compose = (packages / "umbrel/docker-compose.yml").read_text()
    assert f"image: {REDIS}" in compose
    assert f"rewrites each {IMAGE}:<version> below" in compose
    assert (packages / "startos/node_modules/some-package/index.d.ts").read_text() == DEPENDENCY


def test_a_second_run_changes_nothing_and_a_next_release_replaces_the_old_pin(
    packages: Path,
) -> None:
    release.apply(release.rewrites(packages, "0.2.0", DIGEST))
    after_first = contents(packages)

    assert release.rewrites(packages, "0.2.0", DIGEST) == []

    release.apply(release.rewrites(packages, "0.3.0-rc.1", OLD_DIGEST))
    compose = (packages / "umbrel/docker-compose.yml").read_text()
    assert compose.count(f"{IMAGE}:0.3.0-rc.1@{OLD_DIGEST}\n") == 2
    assert DIGEST not in compose and after_first != contents(packages)


@pytest.mark.parametrize(
    ("version", "digest"),
    [
        ("0.2.0", "sha256:" + "ab" * 31),  # too short
        ("0.2.0", "sha256:" + "AB" * 32),  # registries write digests in lower case
        ("0.2.0", "ab" * 32),  # no algorithm
        ("0.2.0", f"{DIGEST}\nimage: evil"),
        ("v0.2.0", DIGEST),
        ("0.2", DIGEST),
        ("latest", DIGEST),
        ("0.2.0+build.1", DIGEST),  # no + in a Docker tag
        ("0.2.0 ", DIGEST),
    ],
)
def test_it_refuses_a_malformed_version_or_digest_and_changes_nothing(
    packages: Path, version: str, digest: str
) -> None:
    before = contents(packages)

    with pytest.raises(ReleaseError):
        release.rewrites(packages, version, digest)
    assert release.main(["pin", version, digest, "--root", str(packages)]) == 1

    assert contents(packages) == before


def test_it_refuses_when_a_package_has_no_reference_to_pin_and_writes_no_other(
    packages: Path,
) -> None:
    (packages / "startos/manifest/index.ts").write_text("export const manifest = {}\n")
    (packages / "startos/main.ts").unlink()
    before = contents(packages)

    assert release.main(["pin", "0.2.0", DIGEST, "--root", str(packages)]) == 1

    assert contents(packages) == before  # the compose file, which had one, is not written


def test_a_dry_run_prints_the_changes_and_writes_nothing(
    packages: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = contents(packages)

    assert release.main(["pin", "0.2.0", DIGEST, "--root", str(packages), "--dry-run"]) == 0

    printed = capsys.readouterr().out
    assert f"+    image: {IMAGE}:0.2.0@{DIGEST}" in printed
    assert f"-    image: {IMAGE}:0.1.0@{OLD_DIGEST}" in printed
    assert '+version: "0.2.0"' in printed
    assert "4 file(s) would change." in printed
    assert contents(packages) == before


def test_the_script_dry_run_shows_the_multi_arch_build_and_the_pin_without_docker(
    packages: Path,
) -> None:
    for name in ("scripts/release", "sovereign/release.py"):
        (packages / name).parent.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, packages / name)
    before = contents(packages)

    done = subprocess.run(
        ["bash", str(packages / "scripts/release"), "0.2.0", "--dry-run"],
        capture_output=True,
        text=True,
    )
    refused = subprocess.run(
        ["bash", str(packages / "scripts/release"), "0.2", "--dry-run"],
        capture_output=True,
        text=True,
    )

    assert done.returncode == 0, done.stderr
    assert (
        "Would run: docker buildx build --platform linux/amd64,linux/arm64 --push "
        f"-t {IMAGE}:0.2.0 --metadata-file"
    ) in done.stdout
    assert f"+    image: {IMAGE}:0.2.0@sha256:{'0' * 64}" in done.stdout
    assert refused.returncode != 0 and "Would run" not in refused.stdout
    assert "not a version" in refused.stderr
    assert contents(packages) == before


def test_it_reads_the_index_digest_and_requires_both_architectures() -> None:
    # The shapes buildx writes: --metadata-file, and imagetools inspect's {{json .Manifest}}
    # (an index with one manifest per platform, plus buildx's attestation manifests).
    metadata = {"containerimage.digest": DIGEST, "image.name": f"{IMAGE}:0.2.0"}
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": DIGEST,
        "manifests": [
            {"digest": "sha256:" + "2" * 64, "platform": {"architecture": a, "os": "linux"}}
            for a in ("amd64", "arm64")
        ]
        + [
            {
                "digest": "sha256:" + "3" * 64,
                "platform": {"architecture": "unknown", "os": "unknown"},
            }
        ],
    }
    amd64_only = {**index, "manifests": index["manifests"][:1]}

    assert release.index_digest(json.loads(json.dumps(metadata))) == DIGEST
    with pytest.raises(ReleaseError):
        release.index_digest({"containerimage.digest": "sha256:abc"})
    assert release.missing_platforms(index) == []
    assert release.missing_platforms(amd64_only) == ["linux/arm64"]
