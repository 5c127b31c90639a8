"""Builds llama-cpp-python without Intel AMX code: portable by default, or for this processor.

Run by `make` before the rest of the install (standard library only, as no venv has packages
yet): `python sovereign/llama_build.py --venv .venv`; the image's builder runs the same.

Two modes decide the machine code:
- portable (the default, and the image's): `GGML_NATIVE=OFF` with one CPU library per
  processor generation (`GGML_BACKEND_DL` + `GGML_CPU_ALL_VARIANTS`): x86-64 from plain SSE2 and
  SSE4.2 up to AVX-512, Armv8.0 up to Armv9.2. llama.cpp scores each library against the
  processor at run time and loads the best one (sovereign/llama_cpu.py asks it to), so one build
  runs on an old Celeron, an Intel N100 and a Raspberry Pi 5 alike, whatever machine built it.
- native: `GGML_NATIVE=ON`, one CPU library for the building processor only (`bench/` compares).

Why AMX is left out: llama.cpp's AMX matrix code dies with an illegal instruction on worker
threads (llama.cpp asks the kernel for AMX permission on the main thread only). In a native
build `-mno-amx-…` given through CMAKE_C_FLAGS / CMAKE_CXX_FLAGS wins over `-march=native`
whatever their order (GCC and Clang let an explicit `-mno-…` do so). In a portable build the
variant meant for AMX processors (sapphirerapids) asks for `-mamx-tile -mamx-int8` after our
flags, so it is taken out of the wheel instead: without it an AMX processor loads the zen4
variant, which has every other feature of that one (AVX-512 with VBMI, VNNI and BF16).

Why a cache of our own: pip's wheel cache is keyed by the source archive alone, so a wheel built
once with other flags (or on another processor) would be installed again as it is. Our wheels
are kept under a key of everything that decides the machine code: the version, the mode and its
flags, the compiler, the architecture and, for a native build only, the processor's features.
Every shared library in a wheel, each CPU variant included, is disassembled and checked for AMX
instructions before the wheel is kept or installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path
from typing import Literal

PACKAGE = "llama-cpp-python"
Mode = Literal["portable", "native"]
MODES: tuple[Mode, ...] = ("portable", "native")
# platform.machine() (or Docker's TARGETARCH) -> the architecture as llama.cpp's CMake sees it.
ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
PORTABLE_ARGS = [
    "-DGGML_NATIVE=OFF",
    "-DGGML_BACKEND_DL=ON",
    "-DGGML_CPU_ALL_VARIANTS=ON",
    # ggml installs the CPU variants (loadable modules) into CMAKE_INSTALL_BINDIR, `bin/` at the
    # top of the wheel by default; beside libggml they are where sovereign/llama_cpu.py looks.
    "-DCMAKE_INSTALL_BINDIR=llama_cpp/lib",
]
# Explicit, so that an environment that switches native off (SOURCE_DATE_EPOCH does, in
# llama.cpp's CMake) does not silently fall back to a generic build.
NATIVE_ARGS = ["-DGGML_NATIVE=ON"]
# A CPU variant library, as ggml names them: libggml-cpu-<variant>.so.
CPU_VARIANT = re.compile(r"(?:^|/)libggml-cpu-(?P<variant>[\w.]+)\.so$")
# An AMX tile register, or an instruction that only AMX code uses, in `objdump -d` output.
AMX_INSTRUCTION = re.compile(r"%tmm[0-7]\b|\b(?:ldtilecfg|sttilecfg|tilerelease)\b")
ROOT = Path(__file__).resolve().parent.parent
BUILD_TIME = "build-time.json"  # beside a kept wheel: how long compiling it took


class BuildError(Exception):
    """The wheel could not be built, or what was built must not be installed."""


def architecture(name: str | None = None) -> str:
    """This machine's architecture (or the one named), as the build knows it."""
    name = name or platform.machine()
    if name.lower() not in ARCHITECTURES:
        raise BuildError(f"No build of {PACKAGE} for the {name} architecture (amd64, arm64).")
    return ARCHITECTURES[name.lower()]


def cmake_args(mode: Mode = "portable", arch: str | None = None) -> list[str]:
    """The CMake arguments of a build: the mode's, and AMX left out where there is AMX."""
    arguments = list(PORTABLE_ARGS if mode == "portable" else NATIVE_ARGS)
    if architecture(arch) == "x86_64":  # Arm compilers know no -mno-amx-… (and Arm no AMX)
        arguments += [f"-DCMAKE_C_FLAGS={NO_AMX_FLAGS}", f"-DCMAKE_CXX_FLAGS={NO_AMX_FLAGS}"]
    return arguments


def pinned_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    dependencies: list[str] = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    for requirement in dependencies:
        name, _, version = requirement.partition("==")
        if name.strip() == PACKAGE:
            return version.strip()
    raise BuildError(f"pyproject.toml pins no {PACKAGE}==<version>.")


def quoted(arguments: list[str]) -> str:
    return " ".join(shlex.quote(argument) for argument in arguments)


def build_key(version: str, mode: Mode = "portable", arguments: list[str] | None = None) -> str:
    """Everything that decides the machine code in the wheel, hashed."""
    parts = [
        version,
        mode,
        quoted(cmake_args(mode) if arguments is None else arguments),
        _first_line([os.environ.get("CC", "cc"), "--version"]),
        _first_line([os.environ.get("CXX", "c++"), "--version"]),
        architecture(),
        f"cp{sys.version_info.major}{sys.version_info.minor}",
    ]
    if mode == "native":  # a native build is only right for the processor it was made on
        parts.append(_processor_features())
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


def drop_amx_variants(wheel: Path) -> list[str]:
    """Takes the CPU variants that hold AMX code out of the wheel; returns their names.

    Only a variant may go: llama.cpp then loads the best of the others. AMX anywhere else is
    left in place, for the check that follows to refuse the wheel."""
    dropped = [name for name in wheel_amx_instructions(wheel) if CPU_VARIANT.search(name)]
    if dropped:
        _rewrite_without(wheel, set(dropped))
    return dropped


def cached_wheel(
    cache: Path,
    version: str,
    mode: Mode = "portable",
    arguments: list[str] | None = None,
    *,
    rebuild: bool = False,
    allow_amx: bool = False,  # only bench/llama_build.py builds one, to compare against
) -> Path:
    """The wheel of this mode (and these CMake arguments), built once (again if asked)."""
    arguments = cmake_args(mode) if arguments is None else arguments
    folder = cache / build_key(version, mode, arguments)
    if rebuild:
        shutil.rmtree(folder, ignore_errors=True)
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if wheels:
        return wheels[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        started, compilers_before = time.monotonic(), _children_cpu_seconds()
        wheel = _build(version, mode, arguments, Path(scratch))
        took = {
            "seconds": round(time.monotonic() - started),
            "cpu_seconds": round(_children_cpu_seconds() - compilers_before),
        }
        if not allow_amx:
            for name in drop_amx_variants(wheel):
                print(f"Left out {Path(name).name}: it holds AMX code (see the module's doc).")
            _refuse_amx(wheel)
        folder.mkdir(exist_ok=True)
        (folder / BUILD_TIME).write_text(json.dumps(took))  # for bench/llama_build.py
        kept = folder / wheel.name
        shutil.move(wheel, kept)
    return kept


def install(venv: Path, cache: Path, mode: Mode = "portable", rebuild: bool = False) -> Path:
    """Builds (or takes from the cache) and installs the wheel into the venv, once per key."""
    version = pinned_version()
    key = build_key(version, mode)
    wheel = cached_wheel(cache, version, mode, rebuild=rebuild)
    marker = venv / ".llama-cpp-wheel"
    installed = f"{wheel.name} {key}"
    if not rebuild and marker.exists() and marker.read_text() == installed:
        return wheel
    _refuse_amx(wheel)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(wheel)], check=True)
    marker.write_text(installed)
    return wheel


def _build(version: str, mode: Mode, arguments: list[str], into: Path) -> Path:
    print(f"Building {PACKAGE} {version}, {mode} ({quoted(arguments)}).")
    print("It takes a few minutes, once: the wheel is kept.")
    environment = {**os.environ, "CMAKE_ARGS": quoted(arguments), "FORCE_CMAKE": "1"}
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


def _rewrite_without(wheel: Path, names: set[str]) -> None:
    # A wheel lists its files in RECORD: the dropped ones leave the list too, or pip refuses it.
    rewritten = wheel.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(rewritten, "w") as target:
        for item in source.infolist():
            if item.filename in names:
                continue
            data = source.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if line.split(",")[0] not in names).encode()
            target.writestr(item, data, compress_type=zipfile.ZIP_DEFLATED)
    rewritten.replace(wheel)


def _refuse_amx(wheel: Path) -> None:
    found = wheel_amx_instructions(wheel)
    if found:
        raise BuildError(f"{wheel.name} holds AMX instructions, refused: {found}")


def _children_cpu_seconds() -> float:
    # The compilers' time, as each waited-for process adds its children's to its own.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _first_line(command: list[str]) -> str:
    try:
        output = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    except OSError:
        return f"{command[0]}: not found"
    return output.splitlines()[0] if output else ""


def _processor_features() -> str:
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
    parser.add_argument("--mode", choices=MODES, default="portable", help="portable or native")
    parser.add_argument(
        "--arch", help="the architecture expected (Docker's TARGETARCH): refused if not this one"
    )
    parser.add_argument("--rebuild", action="store_true", help="build again from source")
    arguments = parser.parse_args()
    try:
        _check_architecture(arguments.arch)
        wheel = install(arguments.venv, arguments.cache, arguments.mode, arguments.rebuild)
    except (BuildError, subprocess.CalledProcessError) as error:
        print(f"llama-cpp-python: {error}", file=sys.stderr)
        return 1
    print(f"llama-cpp-python: {wheel.name} ({arguments.mode}, no AMX) in {arguments.venv}")
    return 0


def _check_architecture(expected: str | None) -> None:
    # The builder compiles for the processor it runs on (emulated for another architecture):
    # a build for amd64 made on arm64 without emulation would hold the wrong machine code.
    if expected is not None and architecture(expected) != architecture():
        raise BuildError(f"Asked to build for {expected}, but this machine is {architecture()}.")


if __name__ == "__main__":
    sys.exit(main())
