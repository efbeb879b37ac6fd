"""write_safetensors(path, meta, tensors): the case files the generators beside this file write
(F32, I64 and BOOL tensors, string metadata), read by tests/support/safetensors.cc."""
import json
import struct

_DTYPES = {"float32": "F32", "int64": "I64", "bool": "BOOL"}


def write_safetensors(path, meta, tensors):
    header, blobs, offset = {"__metadata__": meta}, [], 0
    for name in sorted(tensors):
        array = tensors[name].contiguous().numpy()
        data = array.tobytes()
        header[name] = {"dtype": _DTYPES[array.dtype.name], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
