"""The aliases the package's annotations use (the package ships py.typed; see README.md)."""

from typing import Any, Dict, Union

import numpy as np
import numpy.typing as npt
from google.protobuf.message import Message

#: A tensor argument: any object with ``__dlpack__`` (numpy >= 1.22, torch) or the buffer protocol,
#: float32, float16 or bfloat16 (uint8 block masks), any strides; borrowed for the call, never copied.
#: Typing has no protocol for "DLPack or buffer", hence Any.
TensorLike = Any

#: A config: the attnkit_pb2 message, a dict in the proto3 JSON mapping, its serialized bytes, or
#: textproto (str).
ConfigLike = Union[Message, Dict[str, Any], bytes, bytearray, memoryview, str]

#: Positions and indices the library returns: a one-dimensional int64 numpy array.
Int64Array = npt.NDArray[np.int64]
