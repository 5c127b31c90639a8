"""llama.cpp is built without Intel AMX code, whatever processor builds it, and by default
portable: one CPU library per processor generation, the best one loaded at run time.

These hold on machines without AMX too: they read the machine code that was built, and they
compile for a Sapphire Rapids target, whose AMX the build must leave out.
"""

from __future__ import annotations

import platform
import re
import shlex
import subprocess
import zipfile
from pathlib import Path

import llama_cpp
import pytest

from sovereign import llama_build
from sovereign.llama_build import NO_AMX_FLAGS, BuildError, amx_instructions

# The shape of ggml's AMX code: compiled only where the compiler says AMX is there.
USES_AMX_WHEN_ENABLED = """
#include <immintrin.h>
void clear_tile(void) {
#if defined(__AMX_TILE__)
    _tile_zero(4);
#endif
}
"""
AMX_TARGET = "-march=sapphirerapids"
ROOT = Path(__file__).resolve().parent.parent.parent


def shared_library(tmp_path: Path, compiler: str, flags: list[str], suffix: str = ".c") -> Path:
    source = tmp_path / f"tile{suffix}"
    source.write_text(USES_AMX_WHEN_ENABLED)
    library = tmp_path / f"libtile-{compiler}.so"
    command = [compiler, "-O2", "-shared", "-fPIC", *flags, str(source), "-o", str(library)]
    subprocess.run(command, check=True, capture_output=True)
    return library


def test_the_installed_llama_cpp_libraries_hold_no_amx_instruction() -> None:
    libraries = sorted((Path(llama_cpp.__file__).parent / "lib").glob("lib*.so*"))

    assert any(library.name.startswith("libggml-cpu") for library in libraries), libraries
    for library in libraries:
        assert amx_instructions(library) == [], library.name


def test_the_check_finds_amx_instructions_where_they_are(tmp_path: Path) -> None:
    library = shared_library(tmp_path, "gcc", [AMX_TARGET])

    found = amx_instructions(library)

    assert any("tilezero" in line and "%tmm4" in line for line in found), found


@pytest.mark.parametrize(("compiler", "suffix"), [("gcc", ".c"), ("g++", ".cpp")])
def test_the_build_flags_leave_amx_out_although_native_flags_come_after_them(
    tmp_path: Path, compiler: str, suffix: str
) -> None:
    # CMake puts CMAKE_C_FLAGS / CMAKE_CXX_FLAGS before llama.cpp's own `-march=native`.
    flags = [*shlex.split(NO_AMX_FLAGS), AMX_TARGET]

    library = shared_library(tmp_path, compiler, flags, suffix)

    assert amx_instructions(library) == []
    for mode in llama_build.MODES:
        flags_argument = f"-DCMAKE_{'CXX' if compiler == 'g++' else 'C'}_FLAGS={NO_AMX_FLAGS}"
        assert flags_argument in llama_build.cmake_args(mode, "x86_64")


def test_a_kept_wheel_that_holds_amx_is_refused_and_not_installed(tmp_path: Path) -> None:
    version = llama_build.pinned_version()
    kept = tmp_path / "cache" / llama_build.build_key(version)
    kept.mkdir(parents=True)
    wheel = kept / f"llama_cpp_python-{version}-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(shared_library(tmp_path, "gcc", [AMX_TARGET]), "llama_cpp/lib/libggml-cpu.so")
    venv = tmp_path / "venv"
    venv.mkdir()

    with pytest.raises(BuildError, match="holds AMX instructions"):
        llama_build.install(venv, tmp_path / "cache")

    assert not (venv / ".llama-cpp-wheel").exists()


def test_a_wheel_of_another_mode_or_other_flags_is_not_taken_nor_a_native_one_from_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    portable, native = (llama_build.build_key("0.3.36", mode) for mode in llama_build.MODES)
    without_our_flags = llama_build.build_key("0.3.36", "native", ["-DGGML_NATIVE=ON"])

    monkeypatch.setattr(llama_build, "_processor_features", lambda: "avx2 amx_tile amx_int8")

    assert len({portable, native, without_our_flags}) == 3
    assert llama_build.build_key("0.3.36", "native") != native  # made for another processor
    assert llama_build.build_key("0.3.36", "portable") == portable  # runs on any of them


@pytest.mark.parametrize("arch", ["x86_64", "amd64", "aarch64", "arm64"])
def test_the_portable_build_has_no_native_flags_and_picks_its_cpu_variant_at_run_time(
    arch: str,
) -> None:
    arguments = llama_build.cmake_args("portable", arch)

    assert arguments[:4] == [
        "-DGGML_NATIVE=OFF",
        "-DGGML_BACKEND_DL=ON",
        "-DGGML_CPU_ALL_VARIANTS=ON",
        "-DCMAKE_INSTALL_BINDIR=llama_cpp/lib",  # where sovereign/llama_cpu.py looks
    ]
    assert not [
        argument for argument in arguments if "=native" in argument or "NATIVE=ON" in argument
    ]


@pytest.mark.parametrize("mode", llama_build.MODES)
def test_amx_is_never_asked_for_and_arm_compilers_get_no_x86_flags(mode: llama_build.Mode) -> None:
    x86 = llama_build.cmake_args(mode, "amd64")
    arm = llama_build.cmake_args(mode, "arm64")

    everything = " ".join(x86 + arm).lower()
    assert "-mamx" not in everything and "amx_tile=on" not in everything
    assert "amx_int8=on" not in everything and "amx_bf16=on" not in everything
    assert {f"-DCMAKE_C_FLAGS={NO_AMX_FLAGS}", f"-DCMAKE_CXX_FLAGS={NO_AMX_FLAGS}"} <= set(x86)
    assert "amx" not in " ".join(arm)  # aarch64 GCC stops at an unknown -m option
    assert x86[0] == arm[0] == ("-DGGML_NATIVE=ON" if mode == "native" else "-DGGML_NATIVE=OFF")


@pytest.mark.parametrize("arch", ["riscv64", "armv7l", "i686"])
def test_an_architecture_the_image_is_not_built_for_is_refused(arch: str) -> None:
    with pytest.raises(BuildError, match=arch):
        llama_build.cmake_args("portable", arch)


def test_the_variant_with_amx_code_leaves_the_wheel_and_the_others_stay(tmp_path: Path) -> None:
    wheel = tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    with_amx = shared_library(tmp_path, "gcc", [AMX_TARGET])
    without = shared_library(tmp_path, "g++", ["-march=haswell"], ".cpp")
    names = {
        "llama_cpp/lib/libggml-cpu-sapphirerapids.so": with_amx,
        "llama_cpp/lib/libggml-cpu-haswell.so": without,
        "llama_cpp/lib/libggml-cpu-armv8.2_2.so": without,
    }
    record = "".join(f"{name},sha256=x,1\n" for name in names)
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, library in names.items():
            archive.write(library, name)
        archive.writestr("llama_cpp_python-0.3.36.dist-info/RECORD", record)

    dropped = llama_build.drop_amx_variants(wheel)

    assert dropped == ["llama_cpp/lib/libggml-cpu-sapphirerapids.so"]
    with zipfile.ZipFile(wheel) as archive:
        kept = archive.namelist()
        listed = archive.read("llama_cpp_python-0.3.36.dist-info/RECORD").decode()
    assert "llama_cpp/lib/libggml-cpu-sapphirerapids.so" not in kept
    assert "sapphirerapids" not in listed
    assert {"llama_cpp/lib/libggml-cpu-haswell.so", "llama_cpp/lib/libggml-cpu-armv8.2_2.so"} <= (
        set(kept)
    )
    assert llama_build.wheel_amx_instructions(wheel) == {}


def test_amx_outside_a_cpu_variant_stays_for_the_check_to_refuse(tmp_path: Path) -> None:
    wheel = tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(
            shared_library(tmp_path, "gcc", [AMX_TARGET]), "llama_cpp/lib/libggml-base.so"
        )

    assert llama_build.drop_amx_variants(wheel) == []
    assert list(llama_build.wheel_amx_instructions(wheel)) == ["llama_cpp/lib/libggml-base.so"]


def test_the_image_builds_portable_for_the_target_architecture_on_a_compiler_that_can() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    build = re.search(r"^RUN python sovereign/llama_build\.py (.*?)&&", dockerfile, re.M | re.S)
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.M)

    assert build is not None
    arguments = shlex.split(build[1].replace("\\\n", " "))
    assert arguments[arguments.index("--mode") + 1] == "portable"
    assert arguments[arguments.index("--arch") + 1].startswith("${TARGETARCH")
    assert "ARG TARGETARCH" in dockerfile[: build.start()]
    # Both stages on one Debian release whose GCC (14) builds the Armv9.2 SME variants.
    assert len(bases) == 2 and len(set(bases)) == 1 and bases[0].endswith("-trixie")


def test_a_build_for_another_architecture_than_this_machine_is_refused() -> None:
    other = "arm64" if llama_build.architecture() == "x86_64" else "amd64"

    with pytest.raises(BuildError, match="this machine is"):
        llama_build._check_architecture(other)
    llama_build._check_architecture(platform.machine())  # the same one passes
