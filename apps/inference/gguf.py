"""Reads what the catalog shows from a GGUF file's header, and refuses what is not GGUF.

A small reader of its own rather than the `gguf` package: that one parses every token of
the vocabulary into arrays (seconds for a small model), where the catalog needs a dozen
keys and the tensor shapes. Anything malformed raises GGUFError with what is wrong.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
# Sanity limits: a header claiming more than these is corrupt, not a very large model.
MAX_COUNT = 1 << 24
MAX_STRING = 1 << 26

# general.file_type (llama.cpp's LLAMA_FTYPE_*): the quantisation of most tensors.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}  # fmt: skip

# GGUF value types: struct format for the fixed-size ones.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    """The file is not a GGUF model this node can use; the message says why."""


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    name: str
    parameters: int
    quantization: str
    context_length: int | None
    chat_template: str


def read_info(path: Path) -> GGUFInfo:
    try:
        with path.open("rb") as file:
            metadata, parameters = _read_header(file)
    except OSError as error:
        raise GGUFError(f"The file cannot be read: {error.strerror}.") from None
    except (struct.error, UnicodeDecodeError):
        raise GGUFError(
            "The file is truncated or corrupt: its GGUF header does not parse."
        ) from None
    architecture = str(metadata.get("general.architecture", ""))
    if not architecture:
        raise GGUFError("The GGUF header names no architecture (general.architecture).")
    file_type = metadata.get("general.file_type")
    context = metadata.get(f"{architecture}.context_length")
    return GGUFInfo(
        architecture=architecture,
        name=str(metadata.get("general.name", "")),
        parameters=parameters,
        quantization=FILE_TYPES.get(file_type, "unknown")
        if isinstance(file_type, int)
        else "unknown",
        context_length=int(context) if isinstance(context, int) else None,
        chat_template=str(metadata.get("tokenizer.chat_template", "")),
    )


def _read_header(file: BinaryIO) -> tuple[dict[str, Any], int]:
    if file.read(4) != MAGIC:
        raise GGUFError("This is not a GGUF file (it does not start with 'GGUF').")
    (version,) = _unpack(file, "<I")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"GGUF version {version} is not supported (2 or 3 are).")
    tensor_count, kv_count = _unpack(file, "<QQ")
    if tensor_count > MAX_COUNT or kv_count > MAX_COUNT:
        raise GGUFError("The GGUF header claims an impossible number of entries: it is corrupt.")
    metadata = {}
    for _ in range(kv_count):
        key = _string(file)
        (value_type,) = _unpack(file, "<I")
        metadata[key] = _value(file, value_type)
    parameters = sum(_tensor_elements(file) for _ in range(tensor_count))
    return metadata, parameters


def _unpack(file: BinaryIO, layout: str) -> tuple[Any, ...]:
    size = struct.calcsize(layout)
    data = file.read(size)
    if len(data) != size:
        raise GGUFError("The file ends in the middle of its GGUF header: it is truncated.")
    return struct.unpack(layout, data)


def _string(file: BinaryIO) -> str:
    (length,) = _unpack(file, "<Q")
    if length > MAX_STRING:
        raise GGUFError("The GGUF header has an impossibly long string: it is corrupt.")
    data = file.read(length)
    if len(data) != length:
        raise GGUFError("The file ends in the middle of its GGUF header: it is truncated.")
    return data.decode("utf-8")


def _value(file: BinaryIO, value_type: int) -> Any:
    if value_type in _SCALARS:
        return _unpack(file, _SCALARS[value_type])[0]
    if value_type == _STRING:
        return _string(file)
    if value_type == _ARRAY:
        item_type, count = _unpack(file, "<IQ")
        if count > MAX_COUNT * 16:
            raise GGUFError("The GGUF header has an impossibly long array: it is corrupt.")
        _skip_array(file, item_type, count)
        return None
    raise GGUFError(f"The GGUF header has an unknown value type {value_type}: it is corrupt.")


def _skip_array(file: BinaryIO, item_type: int, count: int) -> None:
    if item_type in _SCALARS:
        file.seek(struct.calcsize(_SCALARS[item_type]) * count, 1)
        return
    for _ in range(count):
        _value(file, item_type)


def _tensor_elements(file: BinaryIO) -> int:
    _string(file)  # name
    (dimensions,) = _unpack(file, "<I")
    if dimensions > 8:
        raise GGUFError("A tensor in the GGUF header has too many dimensions: it is corrupt.")
    shape = _unpack(file, f"<{dimensions}Q")
    _unpack(file, "<IQ")  # type, offset
    return math.prod(shape)
