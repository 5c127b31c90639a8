"""Loads llama.cpp's CPU library for this processor, from a portable build's variants.

A portable build (sovereign/llama_build.py) holds one CPU library per processor generation,
`llama_cpp/lib/libggml-cpu-<variant>.so`, and no CPU code in llama.cpp itself. llama.cpp only
looks for them beside the running program and in the current directory (python's folder, for
llama-cpp-python), and llama-cpp-python does not tell it where they are: `load()` does, through
`ggml_backend_load_all_from_path`, before the first `llama_backend_init`. llama.cpp scores each
variant against the processor and keeps the best. In a native build the CPU code is linked in and
registered already, so `load()` changes nothing there.

Anything that runs llama.cpp in a process calls `load()` first: the engine (through
apps.inference.batching), its self-check child, and programs started with
`python -m sovereign.llama_cpu MODULE ARGS...` (llama-cpp-python's own server, in the tests).
"""

from __future__ import annotations

import ctypes
import logging
import re
import runpy
import sys
import threading
from pathlib import Path

import llama_cpp
import llama_cpp.llama_cpp

logger = logging.getLogger("sovereign.engine")
LIBRARIES = Path(llama_cpp.__file__).resolve().parent / "lib"
SINGLE_LIBRARY = "built in (a single CPU library)"
_LOADED_VARIANT = re.compile(r"/libggml-cpu-(?P<variant>[\w.]+)\.so$")
_lock = threading.Lock()
_loaded: str | None = None


class NoCpuBackend(RuntimeError):
    """No CPU library of llama.cpp could be loaded for this processor."""


def load() -> str:
    """Loads the CPU library that fits this processor, once; returns which one it is."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load(_ggml())
            logger.info("llama.cpp CPU library: %s", _loaded)
        return _loaded


def _load(ggml: ctypes.CDLL) -> str:
    if ggml.ggml_backend_reg_count() == 0:  # a portable build: nothing is registered yet
        ggml.ggml_backend_load_all_from_path(str(LIBRARIES).encode())
        if ggml.ggml_backend_reg_count() == 0:
            raise NoCpuBackend(f"None of llama.cpp's CPU libraries in {LIBRARIES} loaded.")
    return loaded_variant() or SINGLE_LIBRARY


def loaded_variant() -> str | None:
    """The CPU variant mapped in this process (llama.cpp unloads the ones it did not keep)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    found = {match["variant"] for match in map(_LOADED_VARIANT.search, maps.split()) if match}
    return ", ".join(sorted(found)) or None


def _ggml() -> ctypes.CDLL:
    # ggml's functions as libllama sees them: looked up through libllama's own handle, so in
    # the libggml it was linked with. A wheel holds libggml.so and libggml.so.0 as two files
    # (no symlinks in wheels): opening the first by name would load a second copy, with an
    # empty registry of its own that libllama never reads.
    ggml: ctypes.CDLL = llama_cpp.llama_cpp._lib
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    ggml.ggml_backend_reg_count.argtypes = []
    ggml.ggml_backend_load_all_from_path.restype = None
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    return ggml


def main(argv: list[str]) -> None:
    """Runs a module as a program (`python -m`) with the CPU library loaded first."""
    if not argv:
        raise SystemExit("usage: python -m sovereign.llama_cpu MODULE [ARGS...]")
    load()
    sys.argv = argv
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
