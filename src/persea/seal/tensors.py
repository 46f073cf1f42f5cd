"""Tensors of a safetensors file held in memory, without copying them.

`safetensors.torch.load` takes `bytes` and copies every tensor out of it; a decrypted file
is already one buffer in memory, so here each tensor is a view into that buffer
(`torch.frombuffer`), which keeps the buffer alive. The layout is safetensors' own
(github.com/huggingface/safetensors, "Format"): an 8-byte little-endian header length, a
JSON header mapping each name to its dtype, shape and byte offsets, then the data.
"""

from __future__ import annotations

import json

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def tensors_from_buffer(buf: bytearray) -> dict[str, torch.Tensor]:
    """{name: tensor} sharing `buf`'s memory; ValueError when it is not safetensors."""
    if len(buf) < 8:
        raise ValueError("shorter than a safetensors header")
    n = int.from_bytes(buf[:8], "little")
    if n > len(buf) - 8:
        raise ValueError("its header length runs past the end")
    header = json.loads(bytes(buf[8:8 + n]))
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(meta["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name}: unsupported dtype {meta['dtype']}")
        begin, end = meta["data_offsets"]
        shape = list(meta["shape"])
        count = 1
        for d in shape:
            count *= d
        size = torch.empty((), dtype=dtype).element_size()
        if end - begin != count * size or base + end > len(buf):
            raise ValueError(f"tensor {name}: its offsets do not match its shape")
        if count == 0:
            out[name] = torch.empty(shape, dtype=dtype)
        elif (base + begin) % size:  # unaligned: torch wants aligned views, so copy this one
            out[name] = torch.frombuffer(bytearray(buf[base + begin:base + end]),
                                         dtype=dtype).reshape(shape)
        else:
            out[name] = torch.frombuffer(buf, dtype=dtype, count=count,
                                         offset=base + begin).reshape(shape)
    return out
