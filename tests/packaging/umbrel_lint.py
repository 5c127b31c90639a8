"""The offline rules of Umbrel's app linter, ported to Python.

Umbrel's linter is `.tools/lint-apps.mjs` in the getumbrel/umbrel-apps repository, read at
commit 6372367174937ebc78556be6bc397979a29b7748. That repository carries no license, so it
cannot be copied here; each rule below keeps the linter's rule name, severity and meaning.
CI runs it as `node .tools/lint-apps.mjs --root <pull request> --changed base...HEAD
--check-images --format github`: an app that is not on the base branch is linted as a new app.

Left out, because they need the network or the pull request's git history: `image.pullable`,
`image.architecture` and `image.digest` (`--check-images` asks the registry), and
`git.changed`, `app.top_level`, `app.deleted`, `lint.infrastructure`. The whole store (other
apps' ports, which apps exist) comes from `umbrel_store.json`, recorded from the same commit.
YAML is read with PyYAML (YAML 1.1) where the linter's `yaml` package reads YAML 1.2: they
differ on `yes`/`no`, `1:30` and `<<` merge keys, none of which these rules look at here.
`make lint-umbrel` runs the real linter and compares its findings with these.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from tests.packaging.umbrel_lint_values import (
    IMAGE_REFERENCE,
    KEBAB,
    NON_EMPTY_MANIFEST_FIELDS,
    OPTIONAL_BOOLEAN_MANIFEST_FIELDS,
    OPTIONAL_STRING_MANIFEST_FIELDS,
    REQUIRED_MANIFEST_FIELDS,
    STRING_MANIFEST_FIELDS,
    VALID_CATEGORIES,
    VALID_HOOKS,
    VALID_PERMISSIONS,
    Finding,
    PortMapping,
    Store,
    app_data_subpath,
    broad_host_mount,
    docker_socket,
    downloads_mount,
    environment_map,
    first_line_matching,
    is_integer,
    is_mapping,
    package_files,
    parse_port_mapping,
    rule_name,
    runtime_artifact,
    service_dependencies,
    static_export_values,
    valid_backup_ignore_path,
    valid_url,
    volume_source,
    widget_problems,
)


class AppLint:
    """One app folder linted as a new submission, the way CI lints a pull request."""

    def __init__(self, app_dir: Path, app_id: str, store: Store) -> None:
        self.app_dir = app_dir
        self.app = app_id
        self.store = store
        self.findings: list[Finding] = []
        self.exports = static_export_values(app_dir)

    def run(self) -> list[Finding]:
        manifest = self.parse_yaml("umbrel-app.yml")
        if manifest is None:
            return self.findings
        self.lint_manifest(manifest)
        self.lint_compose(manifest)
        self.lint_exports()
        self.lint_templates()
        self.lint_hooks()
        self.lint_package_files()
        return self.findings

    def add(self, severity: str, rule: str, file: str, message: str) -> None:
        self.findings.append(Finding(severity, rule, f"{self.app}/{file}", message))

    def parse_yaml(self, name: str) -> Any:
        try:
            return yaml.safe_load((self.app_dir / name).read_text())
        except (OSError, yaml.YAMLError) as error:
            self.add("error", "yaml.parse", name, f"{name} is not valid YAML: {error}")
            return None

    # umbrel-app.yml

    def lint_manifest(self, manifest: Any) -> None:
        if not is_mapping(manifest):
            self.add("error", "manifest.type", "umbrel-app.yml", "Manifest must be a YAML object.")
            return
        self.lint_manifest_fields(manifest)
        self.lint_manifest_values(manifest)
        self.lint_manifest_port(manifest.get("port"))
        self.lint_manifest_lists(manifest)
        self.lint_widgets(manifest)
        self.lint_new_app(manifest)

    def manifest_error(self, rule: str, message: str) -> None:
        self.add("error", rule, "umbrel-app.yml", message)

    def lint_manifest_fields(self, manifest: dict[str, Any]) -> None:
        for field in REQUIRED_MANIFEST_FIELDS:
            if field not in manifest:
                self.manifest_error("manifest.required", f"Missing required field `{field}`.")
        if manifest.get("id") != self.app:
            self.manifest_error("manifest.id", "`id` must match the app directory.")
        if isinstance(manifest.get("id"), str) and not KEBAB.fullmatch(manifest["id"]):
            self.manifest_error("manifest.id", "`id` must use lowercase kebab-case.")
        version = manifest.get("manifestVersion")
        valid_version = isinstance(version, (int, float, str)) and not isinstance(version, bool)
        if not (valid_version and re.fullmatch(r"\d+(\.\d+){0,2}", str(version))):
            self.manifest_error("manifest.version", "`manifestVersion` must be numeric.")
        for field in STRING_MANIFEST_FIELDS + OPTIONAL_STRING_MANIFEST_FIELDS:
            if field in manifest and not isinstance(manifest[field], str):
                self.manifest_error(f"manifest.{rule_name(field)}", f"`{field}` must be a string.")
        for field in OPTIONAL_BOOLEAN_MANIFEST_FIELDS:
            if field in manifest and not isinstance(manifest[field], bool):
                self.manifest_error(f"manifest.{rule_name(field)}", f"`{field}` must be a bool.")
        for field in ("developer", "submitter"):
            value = manifest.get(field)
            number_or_string = isinstance(value, (str, int, float)) and not isinstance(value, bool)
            if field in manifest and not number_or_string:
                self.manifest_error(f"manifest.{field}", f"`{field}` must be a string.")

    def lint_manifest_values(self, manifest: dict[str, Any]) -> None:
        category = manifest.get("category")
        if isinstance(category, str) and category not in VALID_CATEGORIES:
            self.manifest_error("manifest.category", f"Unknown category `{category}`.")
        for field in NON_EMPTY_MANIFEST_FIELDS:
            if isinstance(manifest.get(field), str) and not manifest[field].strip():
                self.manifest_error(f"manifest.{rule_name(field)}", f"`{field}` must not be empty.")
        for field, may_be_empty in (("website", False), ("repo", True), ("submission", False)):
            value = manifest.get(field)
            if (
                isinstance(value, str)
                and not (may_be_empty and value == "")
                and not valid_url(value)
            ):
                self.manifest_error(f"manifest.{field}", f"`{field}` must be a valid URL.")
        path = manifest.get("path")
        if not isinstance(path, str) or not (path == "" or path.startswith("/")):
            self.manifest_error("manifest.path", "`path` must be empty or start with `/`.")

    def lint_manifest_port(self, port: object) -> None:
        if not is_integer(port) or not 0 < port <= 65535:
            self.manifest_error("manifest.port", "`port` must be an integer from 1 to 65535.")
            return
        taken = [use for use in self.store.ports.get((port, "tcp"), []) if use.app != self.app]
        if taken:
            self.manifest_error("manifest.port_unique", f"Manifest port {port}/tcp conflicts.")

    def lint_manifest_lists(self, manifest: dict[str, Any]) -> None:
        checks = {
            "dependencies": self.lint_dependency,
            "implements": self.lint_implemented_app,
            "permissions": self.lint_permission,
            "gallery": None,
            "backupIgnore": self.lint_backup_ignore_path,
        }
        for field, check in checks.items():
            if field not in manifest:
                continue
            rule = f"manifest.{rule_name(field)}"
            if not isinstance(manifest[field], list):
                self.manifest_error(rule, f"`{field}` must be a list.")
                continue
            seen: set[str] = set()
            for item in manifest[field]:
                if not isinstance(item, str) or item in seen:
                    self.manifest_error(rule, f"`{field}` entries must be distinct strings.")
                    continue
                seen.add(item)
                if check:
                    check(item)

    def lint_dependency(self, dependency: str) -> None:
        self.lint_other_app("manifest.dependencies", dependency)

    def lint_implemented_app(self, implemented: str) -> None:
        self.lint_other_app("manifest.implements", implemented)

    def lint_other_app(self, rule: str, other: str) -> None:
        if other == self.app:
            self.manifest_error(rule, "An app cannot depend on or implement itself.")
        elif other not in self.store.apps:
            self.manifest_error(rule, f"Unknown app `{other}`.")
        elif other in self.store.disabled:
            self.manifest_error(rule, f"App `{other}` is disabled.")

    def lint_permission(self, permission: str) -> None:
        if permission not in VALID_PERMISSIONS:
            self.manifest_error("manifest.permissions", f"Unknown permission `{permission}`.")

    def lint_backup_ignore_path(self, ignored: str) -> None:
        if not valid_backup_ignore_path(ignored):
            self.manifest_error("manifest.backup_ignore", f"Invalid backupIgnore `{ignored}`.")
        if ignored in ("*", "/*", ".", "./", "data", "data/"):
            self.add("warning", "manifest.backup_ignore", "umbrel-app.yml", "Excludes too much.")

    def lint_widgets(self, manifest: dict[str, Any]) -> None:
        if "widgets" not in manifest:
            return
        if not isinstance(manifest["widgets"], list):
            self.manifest_error("manifest.widgets", "`widgets` must be a list.")
            return
        ids: set[str] = set()
        for widget in manifest["widgets"]:
            for problem in widget_problems(widget, ids):
                self.manifest_error("manifest.widgets", problem)

    def lint_new_app(self, manifest: dict[str, Any]) -> None:
        notes = manifest.get("releaseNotes")
        if not isinstance(notes, str) or notes:
            self.manifest_error("manifest.release_notes", "`releaseNotes` must be empty.")
        if isinstance(manifest.get("gallery"), list) and manifest["gallery"]:
            self.add("warning", "manifest.gallery", "umbrel-app.yml", "Leave `gallery: []`.")
        if isinstance(manifest.get("icon"), str) and manifest["icon"]:
            self.add("warning", "manifest.icon", "umbrel-app.yml", "Omit `icon`.")

    # docker-compose.yml

    def lint_compose(self, manifest: Any) -> None:
        if not (self.app_dir / "docker-compose.yml").exists():
            self.add(
                "error", "compose.missing", "docker-compose.yml", "Missing docker-compose.yml."
            )
            return
        compose = self.parse_yaml("docker-compose.yml")
        if compose is None:
            return
        if not is_mapping(compose):
            self.compose_finding("error", "compose.type", "Compose file must be a YAML object.")
            return
        services = compose.get("services")
        if not is_mapping(services) or not services:
            self.compose_finding("error", "compose.services", "Define at least one service.")
            return
        for key in ("networks", "volumes"):
            if key in compose:
                self.compose_finding("warning", f"compose.{key}", f"Top-level `{key}:` is unusual.")
        manifest = manifest if is_mapping(manifest) else {}
        downloads = False
        for name, service in services.items():
            if is_mapping(service):
                self.lint_service(name, service, services, manifest)
                downloads = self.lint_service_volumes(name, service) or downloads
        if downloads and "STORAGE_DOWNLOADS" not in (manifest.get("permissions") or []):
            self.manifest_error("permissions.downloads", "Declare `STORAGE_DOWNLOADS`.")
        self.lint_app_proxy(services)
        self.lint_launch_route(manifest, services)

    def compose_finding(self, severity: str, rule: str, message: str) -> None:
        self.add(severity, rule, "docker-compose.yml", message)

    def lint_service(
        self, name: str, service: dict[str, Any], services: dict[str, Any], manifest: dict[str, Any]
    ) -> None:
        if "build" in service:
            self.compose_finding("error", "compose.build", f"`{name}` must use a prebuilt image.")
        self.lint_service_image(name, service.get("image"))
        self.lint_service_restart(name, service)
        self.lint_service_dependencies(name, service, services)
        self.lint_service_ports(name, service, services, manifest)
        self.lint_service_access(name, service)

    def lint_service_image(self, name: str, image: object) -> None:
        if not image:
            return
        if not isinstance(image, str):
            self.compose_finding("error", "image.type", f"Image of `{name}` must be a string.")
            return
        parsed = IMAGE_REFERENCE.fullmatch(image)
        if not parsed:
            message = f"Image `{image}` must include both a tag and `@sha256:` digest."
            self.compose_finding("error", "image.pinned", message)
        elif parsed["tag"] == "latest":
            self.compose_finding("warning", "image.latest", f"`{image}` pins the `latest` tag.")

    def lint_service_restart(self, name: str, service: dict[str, Any]) -> None:
        if name == "app_proxy" or ("image" not in service and "build" not in service):
            return
        if "restart" not in service:
            self.compose_finding("warning", "service.restart", f"`{name}` sets no restart.")
        elif service["restart"] != "on-failure":
            self.compose_finding("warning", "service.restart", f"`{name}` is not on-failure.")

    def lint_service_dependencies(
        self, name: str, service: dict[str, Any], services: dict[str, Any]
    ) -> None:
        for target, condition in service_dependencies(service.get("depends_on")):
            if not services.get(target):
                self.compose_finding(
                    "error", "service.depends_on", f"`{name}`: unknown `{target}`."
                )
            elif condition == "service_healthy" and not is_mapping(
                services[target].get("healthcheck")
            ):
                message = f"`{name}` waits for `{target}` to be healthy, but it has no healthcheck."
                self.compose_finding("error", "service.depends_on", message)

    def lint_service_ports(
        self, name: str, service: dict[str, Any], services: dict[str, Any], manifest: dict[str, Any]
    ) -> None:
        if "ports" not in service:
            return
        if not isinstance(service["ports"], list):
            self.compose_finding("error", "ports.type", f"`{name}` ports must be a list.")
            return
        for mapping in service["ports"]:
            parsed = parse_port_mapping(mapping, self.exports)
            if parsed is None:
                self.compose_finding("error", "ports.format", f"`{name}`: invalid port mapping.")
            elif not parsed.explicit:
                self.compose_finding("error", "ports.explicit", f"`{name}`: use host:container.")
            elif parsed.unresolved_host or parsed.published_port is None:
                self.compose_finding("warning", "ports.unresolved", f"`{name}`: unresolved port.")
            else:
                self.lint_published_port(name, parsed, services, manifest)

    def lint_published_port(
        self, name: str, parsed: PortMapping, services: dict[str, Any], manifest: dict[str, Any]
    ) -> None:
        port, protocol = parsed.published_port, parsed.protocol
        assert port is not None
        # Another app's use conflicts; so does another service of this app publishing it.
        others = [use for use in self.store.ports.get((port, protocol), []) if use.app != self.app]
        siblings = [
            other
            for other, service in services.items()
            if other != name and (port, protocol) in self.published(service)
        ]
        if others or siblings:
            severity = "warning" if protocol == "udp" and not siblings else "error"
            self.compose_finding(severity, "ports.unique", f"`{name}`: {port}/{protocol} is taken.")
        if services.get("app_proxy") and protocol == "tcp" and port == manifest.get("port"):
            self.compose_finding(
                "error", "ports.app_proxy", f"`{name}` publishes app_proxy's port."
            )

    def published(self, service: object) -> set[tuple[int, str]]:
        if not is_mapping(service) or not isinstance(service.get("ports"), list):
            return set()
        return {
            (parsed.published_port, parsed.protocol)
            for mapping in service["ports"]
            if (parsed := parse_port_mapping(mapping, self.exports))
            and parsed.explicit
            and parsed.published_port
        }

    def lint_service_access(self, name: str, service: dict[str, Any]) -> None:
        if "container_name" in service:
            self.compose_finding("warning", "service.container_name", f"`{name}` sets it.")
        if service.get("privileged") is True:
            self.compose_finding("warning", "access.privileged", f"`{name}` is privileged.")
        if service.get("network_mode") == "host":
            self.compose_finding("warning", "access.host_network", f"`{name}`: host network.")
        for key, rule in (
            ("devices", "access.devices"),
            ("cap_add", "access.cap_add"),
            ("security_opt", "access.security_opt"),
        ):
            if isinstance(service.get(key), list) and service[key]:
                self.compose_finding("warning", rule, f"`{name}` sets `{key}`.")
        for key in ("pid", "ipc", "uts", "cgroupns_mode", "userns_mode"):
            if service.get(key) == "host":
                self.compose_finding("warning", f"access.{key}", f"`{name}` uses host {key}.")

    def lint_service_volumes(self, name: str, service: dict[str, Any]) -> bool:
        volumes = service.get("volumes")
        if not isinstance(volumes, list):
            return False
        downloads = False
        for volume in volumes:
            if not isinstance(volume, str):
                self.compose_finding("error", "volumes.syntax", f"`{name}`: use short syntax.")
                continue
            source = volume_source(volume)
            if source:
                self.lint_volume_source(source)
                downloads = downloads or downloads_mount(source)
        return downloads

    def lint_volume_source(self, source: str) -> None:
        if docker_socket(source):
            self.compose_finding("error", "access.docker_socket", "Do not mount the Docker socket.")
        if re.fullmatch(r"\$\{?APP_DATA_DIR\}?/?", source):
            self.compose_finding("error", "persistence.app_data_root", "Mount a subdirectory.")
        subpath = app_data_subpath(source)
        if subpath and "$" not in subpath and not self.committed(subpath):
            message = f"Bind mount source `{source}` is not committed at `{self.app}/{subpath}`."
            self.compose_finding("error", "persistence.missing_source", message)
        if broad_host_mount(source):
            self.compose_finding("warning", "access.host_mount", f"Host mount `{source}`.")

    def committed(self, subpath: str) -> bool:
        normalized = os.path.normpath(subpath)
        committed_path = self.app_dir / normalized
        if committed_path.exists():
            return True
        return os.sep not in normalized and Path(f"{committed_path}.template").exists()

    def lint_app_proxy(self, services: dict[str, Any]) -> None:
        proxy = services.get("app_proxy")
        if not is_mapping(proxy):
            return
        environment = environment_map(proxy.get("environment"))
        target = None
        if "APP_HOST" not in environment:
            self.compose_finding("error", "app_proxy.host", "`app_proxy` must set `APP_HOST`.")
        else:
            target = self.proxy_target(services, environment["APP_HOST"])
            if "$" not in environment["APP_HOST"] and target is None:
                self.compose_finding("error", "app_proxy.host", "APP_HOST names no service.")
        port = environment.get("APP_PORT")
        if port is None:
            self.compose_finding("error", "app_proxy.port", "`app_proxy` must set `APP_PORT`.")
        elif not port.startswith("$") and not re.fullmatch(r"\d+", port):
            self.compose_finding("error", "app_proxy.port", "`APP_PORT` must be numeric.")
        self.lint_app_proxy_auth(environment)
        if target and services[target].get("network_mode") == "host":
            self.compose_finding("error", "app_proxy.host_network", "Host networking target.")

    def proxy_target(self, services: dict[str, Any], host: str) -> str | None:
        for name, service in services.items():
            if name == "app_proxy" or not is_mapping(service):
                continue
            hosts = {name, f"{self.app}_{name}_1"}
            if isinstance(service.get("container_name"), str):
                hosts.add(service["container_name"])
            if host in hosts:
                return str(name)
        return None

    def lint_app_proxy_auth(self, environment: dict[str, str]) -> None:
        auth_add = environment.get("PROXY_AUTH_ADD")
        if auth_add is not None and auth_add.lower() not in ("true", "false"):
            self.compose_finding("error", "app_proxy.auth", "`PROXY_AUTH_ADD` must be true/false.")
        for key in ("PROXY_AUTH_WHITELIST", "PROXY_AUTH_BLACKLIST"):
            value = environment.get(key)
            if value is None:
                continue
            if not value.strip():
                self.compose_finding("error", "app_proxy.auth", f"`{key}` must not be empty.")
            patterns = [pattern for pattern in re.split(r"[,\s]+", value) if pattern]
            if any(pattern in ("/", "/*", "/**") for pattern in patterns):
                self.compose_finding("warning", "app_proxy.auth", f"`{key}` is too broad.")
        if (
            auth_add is not None
            and auth_add.lower() == "false"
            and "PROXY_AUTH_WHITELIST" in environment
        ):
            self.compose_finding("warning", "app_proxy.auth", "Whitelist has no effect.")

    def lint_launch_route(self, manifest: dict[str, Any], services: dict[str, Any]) -> None:
        if "app_proxy" in services:
            return
        published = [
            parsed.published_port
            for service in services.values()
            if is_mapping(service) and isinstance(service.get("ports"), list)
            for mapping in service["ports"]
            if (parsed := parse_port_mapping(mapping, self.exports)) and parsed.protocol == "tcp"
        ]
        if manifest.get("port") in published:
            return
        if any(is_mapping(s) and s.get("network_mode") == "host" for s in services.values()):
            return
        self.compose_finding("error", "app.launch", "App must be launchable.")

    # exports.sh, templates, hooks, the files of the package

    def lint_exports(self) -> None:
        path = self.app_dir / "exports.sh"
        if not path.exists():
            return
        content = path.read_text()
        if path.stat().st_mode & 0o111:
            self.add("warning", "exports.executable", "exports.sh", "Sourced: not executable.")
        if content.startswith("#!"):
            self.add("warning", "exports.shebang", "exports.sh", "Sourced: no shebang.")
        for pattern, severity, rule in (
            (r"\s*exit\b", "error", "exports.exit"),
            (r"\s*cd\b", "error", "exports.cd"),
            (r"\s*set\s+-", "error", "exports.shell_options"),
            (r"\s*(docker|mkdir|chown|chmod)\b", "warning", "exports.lifecycle"),
        ):
            if first_line_matching(content, pattern):
                self.add(severity, rule, "exports.sh", f"A line matches {pattern!r}.")

    def lint_templates(self) -> None:
        for path in package_files(self.app_dir):
            if not path.name.endswith(".template"):
                continue
            relative = path.relative_to(self.app_dir).as_posix()
            if "/" in relative:
                self.add("warning", "templates.location", relative, "Only top-level templates.")
            if path.with_name(path.name.removesuffix(".template")).exists():
                self.add("warning", "templates.rendered_output", relative, "Rendered output.")

    def lint_hooks(self) -> None:
        hooks = self.app_dir / "hooks"
        if not hooks.exists():
            return
        for entry in sorted(hooks.iterdir()):
            if entry.name == ".gitkeep":
                continue
            file = f"hooks/{entry.name}"
            if entry.name not in VALID_HOOKS:
                self.add("error", "hooks.name", file, "Not a hook umbrelOS calls.")
            if not entry.is_file():
                continue
            if not entry.stat().st_mode & 0o111:
                self.add("error", "hooks.executable", file, "Hooks must be executable.")
            if not entry.read_text().startswith("#!"):
                self.add("warning", "hooks.shebang", file, "Hooks should start with a shebang.")

    def lint_package_files(self) -> None:
        for path in package_files(self.app_dir):
            relative = path.relative_to(self.app_dir).as_posix()
            if re.match(r"(screenshots?|gallery)(/|$)", relative, re.IGNORECASE) or re.fullmatch(
                r"(icon|logo|screenshot|gallery).*\.(png|jpe?g|webp|gif|svg)",
                relative,
                re.IGNORECASE,
            ):
                self.add("warning", "package.review_assets", relative, "Attach it to the PR.")
            if runtime_artifact(relative):
                self.add("warning", "package.runtime_artifact", relative, "Runtime data?")


def lint_app(app_dir: Path, app_id: str, store: Store | None = None) -> list[Finding]:
    """What `lint-apps.mjs` reports offline for app_dir submitted as <app_id>/."""
    return AppLint(app_dir, app_id, store or Store.recorded()).run()
