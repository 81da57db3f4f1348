"""Reading and writing safetensors files with numpy alone.

The format: 8 bytes little-endian unsigned header length N, N bytes of JSON header mapping each
tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the byte buffer
that follows the header), an optional "__metadata__" of strings, then the raw little-endian
buffers. Nothing is unpickled or executed, which is why bundles use it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .errors import BundleError

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
# A header larger than this is not a weight file we wrote; refuse before allocating it.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Load every tensor of a safetensors file as a numpy array (copies, not views)."""
    data = Path(path).read_bytes()
    return parse_safetensors(data, source=str(path))


def parse_safetensors(data: bytes, *, source: str = "<bytes>") -> dict[str, np.ndarray]:
    if len(data) < 8:
        raise BundleError(f"{source}: not a safetensors file (shorter than 8 bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > min(_MAX_HEADER_BYTES, len(data) - 8):
        raise BundleError(f"{source}: safetensors header length {header_len} is invalid")
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{source}: safetensors header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise BundleError(f"{source}: safetensors header is not a JSON object")
    buffer = memoryview(data)[8 + header_len :]
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise BundleError(
                f"{source}: tensor '{name}' has an unsupported entry {info}"
            ) from None
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not 0 <= begin <= end <= len(buffer) or end - begin != count * dtype.itemsize:
            raise BundleError(f"{source}: tensor '{name}' offsets do not match its shape")
        array = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(shape)
        tensors[name] = array.astype(dtype.newbyteorder("="), copy=True)
    return tensors


def write_safetensors(
    path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> Path:
    """Write tensors (sorted by name, so the bytes and hence the sha256 are reproducible)."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        if dtype not in _NAMES:
            raise BundleError(
                f"tensor '{name}' has dtype {array.dtype}, not storable in safetensors"
            )
        raw = np.ascontiguousarray(array, dtype=dtype).tobytes()
        header[name] = {
            "dtype": _NAMES[dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # keeps the buffers 8-byte aligned
    path = Path(path)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))
    return path


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load an .npz weight file without ever unpickling (object arrays are refused)."""
    try:
        with np.load(Path(path), allow_pickle=False) as archive:
            return {name: np.array(archive[name]) for name in archive.files}
    except ValueError as err:
        raise BundleError(f"{path}: cannot load without pickle ({err})") from None
