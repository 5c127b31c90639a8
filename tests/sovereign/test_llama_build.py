"""llama.cpp is built without Intel AMX code, whatever processor builds it.

These hold on machines without AMX too: they read the machine code that was built, and they
compile for a Sapphire Rapids target, whose AMX the build must leave out.
"""

from __future__ import annotations

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
    assert f"-DCMAKE_{'CXX' if compiler == 'g++' else 'C'}_FLAGS={NO_AMX_FLAGS}" in (
        llama_build.CMAKE_ARGS
    )


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


def test_a_wheel_built_on_another_processor_or_with_other_flags_is_not_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    here = llama_build.build_key("0.3.36")

    without_our_flags = llama_build.build_key("0.3.36", ["-DGGML_NATIVE=ON"])
    monkeypatch.setattr(llama_build, "_processor_features", lambda: "avx2 amx_tile amx_int8")
    elsewhere = llama_build.build_key("0.3.36")

    assert len({here, elsewhere, without_our_flags}) == 3
