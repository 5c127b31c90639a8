"""The portable build's CPU libraries: each processor generation has one, none holds AMX, and
the engine loads the best one this processor can run, and says which.

Each check runs in a fresh Python, as llama.cpp loads its CPU library once per process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from apps.inference.services import bundled_model_file
from sovereign import llama_cpu

ROOT = Path(__file__).resolve().parent.parent.parent
# The x86-64 variants of the vendored llama.cpp (ggml/src/CMakeLists.txt), by the processor
# flags (as /proc/cpuinfo names them) each one needs; `sapphirerapids`, the one with AMX code,
# is left out of the wheel by sovereign/llama_build.py.
AVX512 = ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")
HASWELL = ("sse4_2", "avx", "f16c", "fma", "avx2", "bmi2")
X86_VARIANTS: dict[str, tuple[str, ...]] = {
    "x64": (),
    "sse42": ("sse4_2",),
    "sandybridge": ("sse4_2", "avx"),
    "ivybridge": ("sse4_2", "avx", "f16c"),
    "piledriver": ("sse4_2", "avx", "f16c", "fma"),
    "haswell": HASWELL,
    "alderlake": (*HASWELL, "avx_vnni"),
    "skylakex": (*HASWELL, *AVX512),
    "cannonlake": (*HASWELL, *AVX512, "avx512vbmi"),
    "cascadelake": (*HASWELL, *AVX512, "avx512_vnni"),
    "icelake": (*HASWELL, *AVX512, "avx512vbmi", "avx512_vnni"),
    "cooperlake": (*HASWELL, *AVX512, "avx512_vnni", "avx512_bf16"),
    "zen4": (*HASWELL, *AVX512, "avx512vbmi", "avx512_vnni", "avx512_bf16"),
}
# llama.cpp's score of a variant (ggml-cpu/arch/x86/cpu-feats.cpp): one bit per feature, the
# later features weighing more; the highest score among those that fit is loaded.
WEIGHTS = {
    "fma": 1,
    "f16c": 2,
    "sse4_2": 4,
    "bmi2": 8,
    "avx": 16,
    "avx2": 32,
    "avx_vnni": 64,
    "avx512f": 128,
    "avx512vbmi": 256,
    "avx512_bf16": 512,
    "avx512_vnni": 1024,
}
on_x86 = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 variants")


def in_a_fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )


def processor_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    raise AssertionError("no flags line in /proc/cpuinfo")


def shipped_variants() -> set[str]:
    return {
        path.name.removeprefix("libggml-cpu-").removesuffix(".so")
        for path in llama_cpu.LIBRARIES.glob("libggml-cpu-*.so")
    }


@on_x86
def test_every_x86_generation_has_its_cpu_library_and_the_amx_one_is_left_out() -> None:
    assert shipped_variants() == set(X86_VARIANTS)


@on_x86
def test_the_best_variant_this_processor_can_run_is_the_one_loaded() -> None:
    flags = processor_flags()
    fitting = {
        variant: sum(WEIGHTS.get(flag, 0) for flag in set(needs))
        for variant, needs in X86_VARIANTS.items()
        if set(needs) <= flags
    }

    loaded = in_a_fresh_python("from sovereign import llama_cpu; print(llama_cpu.load())")

    assert loaded.stdout.strip() == max(fitting, key=fitting.__getitem__)
    assert loaded.stdout.strip() != "x64"  # this machine has at least SSE4.2


def test_the_engine_loads_a_cpu_library_before_the_model_and_logs_which_once() -> None:
    model = bundled_model_file()
    assert model is not None

    engine = in_a_fresh_python(
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from apps.inference.batching import BatchedGenerator\n"
        f"for _ in range(2): BatchedGenerator({str(model)!r}, slots=1, context_per_slot=64,"
        " threads=1).close()\n"
        "from sovereign import llama_cpu; print(llama_cpu.loaded_variant())"
    )

    logged = [line for line in engine.stderr.splitlines() if "llama.cpp CPU library:" in line]
    assert len(logged) == 1, engine.stderr
    assert logged[0].endswith(f"llama.cpp CPU library: {engine.stdout.strip()}")
    assert engine.stdout.strip() in shipped_variants()


def test_a_program_run_through_the_loader_starts_with_the_cpu_library_loaded(
    tmp_path: Path,
) -> None:
    # As the tests start llama-cpp-python's own server: python -m sovereign.llama_cpu MODULE ...
    (tmp_path / "probe.py").write_text(
        "import sys\nfrom sovereign import llama_cpu\n"
        "print(llama_cpu.loaded_variant(), sys.argv[1:])\n"
    )
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", ""), str(ROOT)])

    ran = subprocess.run(
        [sys.executable, "-m", "sovereign.llama_cpu", "probe", "--port", "1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=True,
    )

    variant, arguments = ran.stdout.strip().split(" ", 1)
    assert variant in shipped_variants()
    assert arguments == "['--port', '1']"
