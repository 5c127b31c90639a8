"""Builds llama-cpp-python for this machine, with no Intel AMX code in it.

Run by `make` before the rest of the install (standard library only, as no venv has packages
yet): `python sovereign/llama_build.py --venv .venv`.

Why AMX is left out: llama.cpp compiled with the machine's native flags on a processor with AMX
(Intel Xeon Sapphire Rapids and later) builds its AMX matrix code, and that code dies with an
illegal instruction on worker threads (llama.cpp asks the kernel for AMX permission on the main
thread only). Leaving AMX out keeps every other native speed-up (AVX2, AVX-512, VNNI...).
GCC and Clang let an explicit `-mno-…` win over `-march=native` whatever their order, so the
flags given through CMAKE_C_FLAGS / CMAKE_CXX_FLAGS hold although llama.cpp adds
`-march=native` after them.

Why a cache of our own: pip's wheel cache is keyed by the source archive alone, so a wheel built
once with other flags (or on another processor) would be installed again as it is. Our wheels
are kept under a key of everything that decides the machine code: the version, the flags, the
compiler and the processor's features. Each wheel is checked for AMX instructions before it is
kept or installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

PACKAGE = "llama-cpp-python"
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
CMAKE_ARGS = [
    # Explicit, so that an environment that switches native off (SOURCE_DATE_EPOCH does, in
    # llama.cpp's CMake) does not silently fall back to a generic build.
    "-DGGML_NATIVE=ON",
    f"-DCMAKE_C_FLAGS={NO_AMX_FLAGS}",
    f"-DCMAKE_CXX_FLAGS={NO_AMX_FLAGS}",
]
# An AMX tile register, or an instruction that only AMX code uses, in `objdump -d` output.
AMX_INSTRUCTION = re.compile(r"%tmm[0-7]\b|\b(?:ldtilecfg|sttilecfg|tilerelease)\b")
ROOT = Path(__file__).resolve().parent.parent


class BuildError(Exception):
    """The wheel could not be built, or what was built must not be installed."""


def pinned_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    dependencies: list[str] = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    for requirement in dependencies:
        name, _, version = requirement.partition("==")
        if name.strip() == PACKAGE:
            return version.strip()
    raise BuildError(f"pyproject.toml pins no {PACKAGE}==<version>.")


def quoted(cmake_args: list[str]) -> str:
    return " ".join(shlex.quote(argument) for argument in cmake_args)


def build_key(version: str, cmake_args: list[str] | None = None) -> str:
    """Everything that decides the machine code in the wheel, hashed."""
    parts = [
        version,
        quoted(CMAKE_ARGS if cmake_args is None else cmake_args),
        _first_line([os.environ.get("CC", "cc"), "--version"]),
        _first_line([os.environ.get("CXX", "c++"), "--version"]),
        platform.machine(),
        f"cp{sys.version_info.major}{sys.version_info.minor}",
        _processor_features(),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def amx_instructions(library: Path) -> list[str]:
    """The AMX instructions that a shared library's code holds (none, for a good build)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        raise BuildError("objdump (from binutils) is needed to check the llama.cpp build.")
    listing = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(library)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.strip() for line in listing.splitlines() if AMX_INSTRUCTION.search(line)]


def wheel_amx_instructions(wheel: Path) -> dict[str, list[str]]:
    """Each shared library in the wheel that holds AMX instructions, with the first few."""
    found: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as scratch, zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if ".so" not in Path(name).name:
                continue
            instructions = amx_instructions(Path(archive.extract(name, scratch)))
            if instructions:
                found[name] = instructions[:3]
    return found


def cached_wheel(
    cache: Path,
    version: str,
    cmake_args: list[str] | None = None,
    *,
    rebuild: bool = False,
    allow_amx: bool = False,  # only bench/llama_build.py builds one, to compare against
) -> Path:
    """The wheel for this machine and these CMake arguments, built once (again if asked)."""
    cmake_args = CMAKE_ARGS if cmake_args is None else cmake_args
    folder = cache / build_key(version, cmake_args)
    if rebuild:
        shutil.rmtree(folder, ignore_errors=True)
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if wheels:
        return wheels[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        wheel = _build(version, cmake_args, Path(scratch))
        if not allow_amx:
            _refuse_amx(wheel)
        folder.mkdir(exist_ok=True)
        kept = folder / wheel.name
        shutil.move(wheel, kept)
    return kept


def install(venv: Path, cache: Path, rebuild: bool = False) -> Path:
    """Builds (or takes from the cache) and installs the wheel into the venv, once per key."""
    version = pinned_version()
    key = build_key(version)
    wheel = cached_wheel(cache, version, rebuild=rebuild)
    marker = venv / ".llama-cpp-wheel"
    installed = f"{wheel.name} {key}"
    if not rebuild and marker.exists() and marker.read_text() == installed:
        return wheel
    _refuse_amx(wheel)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(wheel)], check=True)
    marker.write_text(installed)
    return wheel


def _build(version: str, cmake_args: list[str], into: Path) -> Path:
    print(f"Building {PACKAGE} {version} for this processor ({quoted(cmake_args)}).")
    print("It takes a few minutes, once: the wheel is kept.")
    environment = {**os.environ, "CMAKE_ARGS": quoted(cmake_args), "FORCE_CMAKE": "1"}
    environment.pop("SOURCE_DATE_EPOCH", None)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            # pip's own wheel cache would hand back a wheel built with other flags.
            "--no-cache-dir",
            "--no-binary",
            PACKAGE,
            "--wheel-dir",
            str(into),
            f"{PACKAGE}=={version}",
        ],
        check=True,
        env=environment,
    )
    wheels = list(into.glob("llama_cpp_python-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"pip built {len(wheels)} wheels of {PACKAGE}, expected one.")
    return wheels[0]


def _refuse_amx(wheel: Path) -> None:
    found = wheel_amx_instructions(wheel)
    if found:
        raise BuildError(f"{wheel.name} holds AMX instructions, refused: {found}")


def _first_line(command: list[str]) -> str:
    try:
        output = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    except OSError:
        return f"{command[0]}: not found"
    return output.splitlines()[0] if output else ""


def _processor_features() -> str:
    # A native build is only right for the processor it was made on.
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return " ".join(sorted(line.split(":", 1)[1].split()))
    return platform.processor()


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sovereign" / "wheels"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, required=True, help="the venv to install into")
    parser.add_argument("--cache", type=Path, default=default_cache(), help="kept wheels")
    parser.add_argument("--rebuild", action="store_true", help="build again from source")
    arguments = parser.parse_args()
    try:
        wheel = install(arguments.venv, arguments.cache, arguments.rebuild)
    except (BuildError, subprocess.CalledProcessError) as error:
        print(f"llama-cpp-python: {error}", file=sys.stderr)
        return 1
    print(f"llama-cpp-python: {wheel.name} (no AMX) in {arguments.venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
