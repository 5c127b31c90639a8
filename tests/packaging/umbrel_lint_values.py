"""What Umbrel's linter knows and how it reads values: rule tables, port mappings, bind
mount sources, URLs, the store's other apps. The rules themselves are in umbrel_lint.py."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard
from urllib.parse import urlsplit

STORE_FILE = Path(__file__).with_name("umbrel_store.json")

VALID_HOOKS = {
    "pre-install", "post-install", "pre-start", "post-start",
    "pre-stop", "post-stop", "pre-update", "post-update",
}  # fmt: skip
VALID_CATEGORIES = {
    "ai", "automation", "bitcoin", "crypto", "developer", "files", "finance", "media",
    "networking", "social",
}  # fmt: skip
VALID_PERMISSIONS = {"STORAGE_DOWNLOADS", "GPU"}
REQUIRED_MANIFEST_FIELDS = (
    "manifestVersion", "id", "category", "name", "version", "tagline", "description",
    "developer", "website", "dependencies", "repo", "support", "port", "gallery", "path",
    "submitter", "submission",
)  # fmt: skip
STRING_MANIFEST_FIELDS = (
    "id", "category", "name", "version", "tagline", "description", "website", "support",
    "path", "submission",
)  # fmt: skip
OPTIONAL_STRING_MANIFEST_FIELDS = (
    "releaseNotes", "defaultUsername", "defaultPassword", "defaultShell", "icon",
)  # fmt: skip
OPTIONAL_BOOLEAN_MANIFEST_FIELDS = (
    "deterministicPassword", "optimizedForUmbrelHome", "torOnly", "requiresHttps", "disabled",
)  # fmt: skip
NON_EMPTY_MANIFEST_FIELDS = (
    "name", "version", "tagline", "description", "website", "support", "submitter",
    "submission",
)  # fmt: skip
WIDGET_TYPES = {
    "text-with-buttons", "text-with-progress", "two-stats-with-guage", "three-stats",
    "four-stats", "list", "list-emoji",
}  # fmt: skip
RESERVED_HOST_PORTS = {
    (80, "tcp"): "umbrelOS dashboard HTTP",
    (443, "tcp"): "umbrelOS dashboard HTTPS",
    (2000, "tcp"): "umbrelOS app auth",
}
KEBAB = re.compile(r"[a-z0-9][a-z0-9-]*[a-z0-9]")
IMAGE_REFERENCE = re.compile(r"(?P<name>.+):(?P<tag>[^:@/]+)@sha256:(?P<digest>[a-fA-F0-9]{64})")
STATIC_EXPORT = re.compile(r"export\s+([A-Z_][A-Z0-9_]*)=(?:\"(\d+)\"|'(\d+)'|(\d+))\s*(?:#.*)?")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" or "warning", as the linter reports them
    rule: str
    file: str
    message: str


@dataclass(frozen=True)
class PortUse:
    app: str | None
    kind: str  # "reserved", "manifest" or "compose"
    label: str


@dataclass(frozen=True)
class PortMapping:
    explicit: bool
    host_value: str
    published_port: int | None
    protocol: str
    unresolved_host: bool


@dataclass(frozen=True)
class Store:
    """The rest of the App Store, as the linter sees it from the umbrel-apps checkout."""

    apps: frozenset[str]
    disabled: frozenset[str]
    ports: dict[tuple[int, str], list[PortUse]]

    @classmethod
    def recorded(cls) -> Store:
        data = json.loads(STORE_FILE.read_text())
        ports: dict[tuple[int, str], list[PortUse]] = {
            key: [PortUse(None, "reserved", label)] for key, label in RESERVED_HOST_PORTS.items()
        }
        for use in data["ports"]:
            label = use.get("service") or "manifest"
            ports.setdefault((use["port"], use["protocol"]), []).append(
                PortUse(use["app"], use["kind"], label)
            )
        return cls(frozenset(data["apps"]), frozenset(data["disabled"]), ports)


def is_mapping(value: object) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict)


def is_integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def rule_name(field: str) -> str:
    return re.sub(r"[A-Z]", lambda letter: f"_{letter[0].lower()}", field)


def valid_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def valid_backup_ignore_path(value: str) -> bool:
    if not re.fullmatch(r"[-a-zA-Z0-9._/*]+", value) or value.startswith("/"):
        return False
    normalized = os.path.normpath(PurePosixPath(value))
    return normalized != ".." and not normalized.startswith("../")


def environment_map(environment: object) -> dict[str, str]:
    if isinstance(environment, list):
        return {
            entry.split("=", 1)[0]: entry.split("=", 1)[1] if "=" in entry else ""
            for entry in environment
            if isinstance(entry, str)
        }
    if isinstance(environment, dict):
        return {str(key): js_string(value) for key, value in environment.items()}
    return {}


def js_string(value: object) -> str:
    """String(value) as JavaScript writes it, for the few scalar types YAML gives."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def service_dependencies(depends_on: object) -> list[tuple[str, str | None]]:
    if isinstance(depends_on, str):
        return [(depends_on, None)]
    if isinstance(depends_on, list):
        return [(name, None) for name in depends_on if isinstance(name, str)]
    if not isinstance(depends_on, dict):
        return []
    return [
        (
            name,
            spec["condition"]
            if is_mapping(spec) and isinstance(spec.get("condition"), str)
            else None,
        )
        for name, spec in depends_on.items()
    ]


def static_export_values(app_dir: Path) -> dict[str, str]:
    """Only plain numeric exports: the linter never runs exports.sh."""
    exports = app_dir / "exports.sh"
    if not exports.exists():
        return {}
    values = {}
    for line in exports.read_text().splitlines():
        match = STATIC_EXPORT.fullmatch(line)
        if match:
            values[match[1]] = match[2] or match[3] or match[4]
    return values


def parse_port_number(value: object) -> int | None:
    if is_integer(value):
        return value if 0 < value <= 65535 else None
    if not isinstance(value, str) or not re.fullmatch(r"\d+", value):
        return None
    number = int(value)
    return number if 0 < number <= 65535 else None


def resolve_port_number(value: object, exports: dict[str, str]) -> int | None:
    direct = parse_port_number(value)
    if direct is not None or not isinstance(value, str):
        return direct
    variable = re.fullmatch(r"\$([A-Z_][A-Z0-9_]*)", value) or re.fullmatch(
        r"\$\{([A-Z_][A-Z0-9_]*)\}", value
    )
    return parse_port_number(exports.get(variable[1])) if variable else None


def normalize_protocol(protocol: object) -> str:
    return "udp" if str(protocol).lower() == "udp" else "tcp"


def parse_port_mapping(mapping: object, exports: dict[str, str]) -> PortMapping | None:
    if is_integer(mapping):
        port = parse_port_number(mapping)
        return PortMapping(False, str(mapping), port, "tcp", False)
    if isinstance(mapping, str):
        trimmed = mapping.strip()
        protocol_match = re.search(r"/(tcp|udp)$", trimmed, re.IGNORECASE)
        protocol = normalize_protocol(protocol_match[1] if protocol_match else None)
        value = trimmed[: protocol_match.start()] if protocol_match else trimmed
        parts = value.split(":")
        if len(parts) == 1:
            return PortMapping(
                False, parts[0], resolve_port_number(parts[0], exports), protocol, False
            )
        if len(parts) in (2, 3):
            port = resolve_port_number(parts[-2], exports)
            return PortMapping(True, parts[-2], port, protocol, port is None)
        return PortMapping(True, value, None, protocol, True)
    if isinstance(mapping, dict):
        published = mapping.get("published")
        port = resolve_port_number(published, exports)
        explicit = "published" in mapping
        protocol = normalize_protocol(mapping.get("protocol"))
        return PortMapping(
            explicit, str(published or ""), port, protocol, explicit and port is None
        )
    return None


def volume_source(volume: object) -> str | None:
    if isinstance(volume, str):
        return volume.split(":", 1)[0]
    if isinstance(volume, dict):
        return volume.get("source")
    return None


def app_data_subpath(source: str) -> str | None:
    if "APP_DATA_DIR" not in source:
        return None
    cleaned = re.sub(r"^\$\{APP_DATA_DIR\}", "", source)
    cleaned = re.sub(r"^\$APP_DATA_DIR", "", cleaned)
    return cleaned.removeprefix("/") or None


def downloads_mount(source: str) -> bool:
    return any(
        root in source
        for root in (
            "${UMBREL_ROOT}/data/storage/downloads",
            "$UMBREL_ROOT/data/storage/downloads",
            "/home/umbrel/umbrel/data/storage/downloads",
        )
    )


def docker_socket(source: str) -> bool:
    return "/var/run/docker.sock" in source or "/run/docker.sock" in source


def broad_host_mount(source: str) -> bool:
    if not source.startswith("/") or downloads_mount(source) or docker_socket(source):
        return False
    return source not in ("/etc/localtime", "/etc/timezone")


def runtime_artifact(relative: str) -> bool:
    name = PurePosixPath(relative).name.lower()
    if name.endswith(".template"):
        return False
    return name == ".env" or bool(re.search(r"\.(db|sqlite|sqlite3|log|pid|sock|pem|key)$", name))


def first_line_matching(content: str, pattern: str) -> bool:
    return any(re.match(pattern, line) for line in content.splitlines())


def package_files(app_dir: Path) -> list[Path]:
    return sorted(path for path in app_dir.rglob("*") if path.is_file())


def widget_problems(widget: object, ids: set[str]) -> list[str]:
    if not isinstance(widget, dict):
        return ["Each widget must be a YAML object."]
    problems = [
        f"Widget `{field}` must be a non-empty string."
        for field in ("id", "type", "refresh", "endpoint")
        if not isinstance(widget.get(field), str) or not widget[field]
    ]
    if not isinstance(widget.get("link"), str):
        problems.append("Widget `link` must be a string.")
    if not isinstance(widget.get("example"), dict):
        problems.append("Widget `example` must be a YAML object.")
    widget_id = widget.get("id")
    if isinstance(widget_id, str):
        if not KEBAB.fullmatch(widget_id):
            problems.append(f"Widget id `{widget_id}` must use lowercase kebab-case.")
        if widget_id in ids:
            problems.append(f"Duplicate widget id `{widget_id}`.")
        ids.add(widget_id)
    if isinstance(widget.get("type"), str) and widget["type"] not in WIDGET_TYPES:
        problems.append(f"Unknown widget type `{widget['type']}`.")
    endpoint = widget.get("endpoint")
    if isinstance(endpoint, str) and (
        "://" in endpoint or not re.fullmatch(r"[a-zA-Z0-9_-]+:\d+(/.*)?", endpoint)
    ):
        problems.append(f"Widget endpoint `{endpoint}` must be `service:port/path`.")
    return problems
