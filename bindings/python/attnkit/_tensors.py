"""Outputs: the C ABI writes into caller tensors; when the caller gives none, a numpy array."""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np
import numpy.typing as npt

from attnkit._types import Int64Array


def shape_of(tensor: Any, name: str) -> Tuple[int, ...]:
    """The shape of any tensor-like (numpy, torch, anything with .shape or the buffer protocol)."""
    shape = getattr(tensor, "shape", None)
    if shape is None:
        try:
            shape = memoryview(tensor).shape or ()
        except TypeError:
            raise TypeError(f"{name}: expected a tensor (an object with __dlpack__ or the buffer "
                            f"protocol), got {type(tensor).__name__}") from None
    return tuple(int(d) for d in shape)


def float_output(shape: Tuple[int, ...], like: Any) -> npt.NDArray[Any]:
    """A new C-contiguous numpy array of ``shape`` for a result: float16 when ``like`` is a float16
    numpy array, else float32 (numpy has no bfloat16; the library computes in float32)."""
    dtype = np.float16 if isinstance(like, np.ndarray) and like.dtype == np.float16 else np.float32
    return np.empty(shape, dtype=dtype)


def int64_array(data: bytearray) -> Int64Array:
    """A bytearray of native int64 values from the extension as a writable numpy array."""
    return np.frombuffer(data, dtype=np.int64)
