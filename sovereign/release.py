"""Pins a released image into the Umbrel and StartOS packages (the last step of scripts/release).

Both stores install prebuilt images only, and Umbrel's linter wants each one pinned by tag and
multi-arch index digest. After `docker buildx build --push` this module reads the index digest,
checks that the index holds both architectures, and rewrites every reference to Sovereign's
image in the packages to `IMAGE:VERSION@sha256:<digest>`, bumping the Umbrel app's version.

Standard library only, run as a script (`python3 sovereign/release.py …`) like llama_build.py,
so a release needs no venv. Every file is read and checked before any is written: a bad version
or digest, or a package with nothing to pin, changes nothing.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IMAGE = "ghcr.io/sovereign-node/sovereign"
PLATFORMS = ("linux/amd64", "linux/arm64")
UMBREL_COMPOSE = "umbrel/docker-compose.yml"
UMBREL_MANIFEST = "umbrel/umbrel-app.yml"
STARTOS_SOURCES = "startos/**/*.ts"
# A version as both stores and a Docker tag accept it: 1.2.3, or 1.2.3-rc.1.
VERSION = re.compile(r"\d+\.\d+\.\d+(?:-[0-9A-Za-z][0-9A-Za-z.-]*)?")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# The image with any tag (Docker's tag grammar), and whatever digest already follows it.
REFERENCE = re.compile(re.escape(IMAGE) + r":[\w][\w.-]{0,127}(?:@sha256:\w*)?")
MANIFEST_VERSION = re.compile(r"^version:[ \t]*(?P<quote>[\"']?)[^\"'\s]+(?P=quote)[ \t]*$", re.M)
ROOT = Path(__file__).resolve().parent.parent


class ReleaseError(Exception):
    """The release cannot go on: nothing has been written."""


@dataclass(frozen=True)
class Rewrite:
    path: Path
    before: str
    after: str

    def diff(self, root: Path) -> str:
        name = str(self.path.relative_to(root))
        lines = difflib.unified_diff(
            self.before.splitlines(keepends=True),
            self.after.splitlines(keepends=True),
            f"a/{name}",
            f"b/{name}",
        )
        return "".join(lines)


def pinned(version: str, digest: str) -> str:
    """The reference the packages get, once version and digest are checked."""
    if not VERSION.fullmatch(version):
        raise ReleaseError(f"{version!r} is not a version such as 1.2.3 or 1.2.3-rc.1.")
    if not DIGEST.fullmatch(digest):
        raise ReleaseError(f"{digest!r} is not a digest such as sha256:<64 hexadecimal digits>.")
    return f"{IMAGE}:{version}@{digest}"


def rewrites(root: Path, version: str, digest: str) -> list[Rewrite]:
    """What pinning version@digest would change in the packages under root (nothing written)."""
    reference = pinned(version, digest)
    compose = root / UMBREL_COMPOSE
    startos = sorted(
        path for path in root.glob(STARTOS_SOURCES) if "node_modules" not in path.parts
    )
    _require_references([compose], "the Umbrel compose file")
    _require_references(startos, f"the StartOS package ({STARTOS_SOURCES})")
    changes = [_pin_references(path, reference) for path in [compose, *startos]]
    changes.append(_bump_manifest(root / UMBREL_MANIFEST, version))
    return [change for change in changes if change.before != change.after]


def apply(changes: Iterable[Rewrite]) -> None:
    for change in changes:
        change.path.write_text(change.after)


def index_digest(metadata: dict[str, object]) -> str:
    """The multi-arch index digest from `docker buildx build --metadata-file`."""
    digest = metadata.get("containerimage.digest")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise ReleaseError(f"No image digest in the build's metadata: {digest!r}.")
    return digest


def missing_platforms(manifest: dict[str, object]) -> list[str]:
    """The architectures that the pushed index lacks.

    manifest: the index as `docker buildx imagetools inspect --format '{{json .Manifest}}'`
    prints it."""
    entries = manifest.get("manifests")
    platforms = {
        f"{entry['platform'].get('os')}/{entry['platform'].get('architecture')}"
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict) and isinstance(entry.get("platform"), dict)
    }
    return [platform for platform in PLATFORMS if platform not in platforms]


def _require_references(paths: list[Path], what: str) -> None:
    if not any(path.is_file() and REFERENCE.search(path.read_text()) for path in paths):
        raise ReleaseError(f"No {IMAGE}:<tag> in {what}: nothing to pin there.")


def _pin_references(path: Path, reference: str) -> Rewrite:
    before = path.read_text() if path.is_file() else ""
    return Rewrite(path, before, REFERENCE.sub(reference, before))


def _bump_manifest(path: Path, version: str) -> Rewrite:
    if not path.is_file():
        raise ReleaseError(f"{UMBREL_MANIFEST} is missing.")
    before = path.read_text()
    if len(MANIFEST_VERSION.findall(before)) != 1:
        raise ReleaseError(f"{UMBREL_MANIFEST} has no single top-level `version:` line.")
    quote = MANIFEST_VERSION.search(before)["quote"] or '"'  # type: ignore[index]
    after = MANIFEST_VERSION.sub(f"version: {quote}{version}{quote}", before)
    return Rewrite(path, before, after)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="refuse a malformed version before building")
    check.add_argument("version")
    digest = commands.add_parser("digest", help="print the index digest of a build")
    digest.add_argument("metadata", type=Path, help="the file of buildx --metadata-file")
    platforms = commands.add_parser("platforms", help="refuse an index without both arches")
    platforms.add_argument("manifest", type=Path, help="imagetools inspect's JSON .Manifest")
    pin = commands.add_parser("pin", help="write VERSION@DIGEST into both packages")
    pin.add_argument("version")
    pin.add_argument("digest")
    pin.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    pin.add_argument("--root", type=Path, default=ROOT)
    arguments = parser.parse_args(argv)
    try:
        return _run(arguments)
    except ReleaseError as error:
        print(f"release: {error}", file=sys.stderr)
        return 1


def _run(arguments: argparse.Namespace) -> int:
    if arguments.command == "check":
        pinned(arguments.version, "sha256:" + "0" * 64)
    elif arguments.command == "digest":
        print(index_digest(json.loads(arguments.metadata.read_text())))
    elif arguments.command == "platforms":
        missing = missing_platforms(json.loads(arguments.manifest.read_text()))
        if missing:
            raise ReleaseError(f"The pushed image lacks {', '.join(missing)}.")
    else:
        changes = rewrites(arguments.root, arguments.version, arguments.digest)
        for change in changes:
            print(change.diff(arguments.root), end="")
        if not arguments.dry_run:
            apply(changes)
        print(f"{len(changes)} file(s) {'would change' if arguments.dry_run else 'changed'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
