"""A stand-in for the small part of PyTorch that generate_kvpress.py and kvpress's SnapKVPress,
TOVAPress, ScorerPress and ExpectedAttentionPress use, over NumPy, for machines without PyTorch.

generate_kvpress.py imports it as `torch` only when `import torch` fails. Every operation keeps
PyTorch's semantics for the arguments those files pass (float32 arithmetic, avg_pool1d with
count_include_pad, F.pad with a value, softmax along a dim, topk indices, gather); anything else
raises. Random draws come from NumPy's generator, not PyTorch's: the cases record their inputs, so
the draws need not match torch's.
"""
import math
import types

import numpy as np

float32 = np.float32
float64 = np.float64
int64 = np.int64


def _arr(x):
    return x.a if isinstance(x, Tensor) else x


def _dim(d, n):
    return d + n if d < 0 else d


class Tensor:
    def __init__(self, a):
        self.a = np.asarray(a)

    # ---- facts
    @property
    def shape(self):
        return self.a.shape

    @property
    def dtype(self):
        return self.a.dtype.type

    @property
    def device(self):
        return "cpu"

    @property
    def T(self):
        return Tensor(self.a.T)

    def size(self, d=None):
        return self.a.shape if d is None else self.a.shape[d]

    def dim(self):
        return self.a.ndim

    def item(self):
        return self.a.item()

    def tolist(self):
        return self.a.tolist()

    def numpy(self):
        return self.a

    def __len__(self):
        return len(self.a)

    def __iter__(self):
        for x in self.a:
            yield Tensor(x)

    # ---- conversions
    def float(self):
        return Tensor(self.a.astype(np.float32))

    def double(self):
        return Tensor(self.a.astype(np.float64))

    def to(self, *args, dtype=None, **kwargs):
        for a in args:
            if isinstance(a, type) and issubclass(a, np.generic):
                dtype = a
        return Tensor(self.a.astype(dtype)) if dtype is not None else self

    def contiguous(self):
        return Tensor(np.ascontiguousarray(self.a))

    def clone(self):
        return Tensor(self.a.copy())

    # ---- shapes
    def view(self, *shape):
        return Tensor(self.a.reshape(shape))

    reshape = view

    def transpose(self, i, j):
        return Tensor(np.swapaxes(self.a, i, j))

    def unsqueeze(self, d):
        return Tensor(np.expand_dims(self.a, _dim(d, self.a.ndim + 1)))

    def squeeze(self, d):
        return Tensor(np.squeeze(self.a, axis=d))

    def expand(self, *shape):
        shape = tuple(s if s != -1 else self.a.shape[i] for i, s in enumerate(shape))
        return Tensor(np.broadcast_to(self.a, shape))

    def repeat(self, *reps):
        return Tensor(np.tile(self.a, reps))

    def __getitem__(self, idx):
        return Tensor(self.a[_arr(idx) if not isinstance(idx, tuple) else
                             tuple(_arr(i) for i in idx)])

    def __setitem__(self, idx, value):
        self.a[idx] = _arr(value)

    # ---- arithmetic (results keep float32 when both sides are float32 or Python numbers)
    def _bin(self, other, op):
        o = _arr(other)
        if isinstance(o, (int, float)):
            o = np.asarray(o, dtype=self.a.dtype if self.a.dtype.kind == "f" else None)
        return Tensor(op(self.a, o))

    def __add__(self, o):
        return self._bin(o, np.add)

    __radd__ = __add__

    def __iadd__(self, o):
        return self._bin(o, np.add)

    def __sub__(self, o):
        return self._bin(o, np.subtract)

    def __rsub__(self, o):
        return self._bin(o, lambda a, b: b - a)

    def __mul__(self, o):
        return self._bin(o, np.multiply)

    __rmul__ = __mul__

    def __truediv__(self, o):
        return self._bin(o, np.divide)

    def __rtruediv__(self, o):
        return self._bin(o, lambda a, b: b / a)

    def __rpow__(self, o):
        return self._bin(o, lambda a, b: np.power(b, a))

    def __neg__(self):
        return Tensor(-self.a)

    def __matmul__(self, o):
        return Tensor(np.matmul(self.a, _arr(o)))

    def __le__(self, o):
        return Tensor(self.a <= _arr(o))

    def __lt__(self, o):
        return Tensor(self.a < _arr(o))

    def __eq__(self, o):
        return Tensor(self.a == _arr(o))

    __hash__ = None

    def __bool__(self):
        return bool(self.a)

    def __format__(self, spec):
        return format(self.a.item(), spec) if self.a.ndim == 0 else str(self.a)

    # ---- reductions and elementwise
    def mean(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor(self.a.mean(dtype=self.a.dtype))
        return Tensor(self.a.mean(axis=dim, keepdims=keepdim, dtype=self.a.dtype))

    def sum(self, dim=None):
        return Tensor(self.a.sum(axis=dim, dtype=self.a.dtype))

    def max(self):
        return Tensor(self.a.max())

    def abs(self):
        return Tensor(np.abs(self.a))

    def cos(self):
        return Tensor(np.cos(self.a))

    def sin(self):
        return Tensor(np.sin(self.a))

    def norm(self, dim=-1):
        return Tensor(np.sqrt((self.a * self.a).sum(axis=dim, dtype=self.a.dtype)))

    def topk(self, k, dim=-1):
        assert dim == -1
        order = np.argsort(-self.a, axis=-1, kind="stable")[..., :k]
        return types.SimpleNamespace(indices=Tensor(order.astype(np.int64)),
                                     values=Tensor(np.take_along_axis(self.a, order, -1)))

    def gather(self, dim, index):
        return Tensor(np.take_along_axis(self.a, _arr(index), axis=dim))


def tensor(data, dtype=None):
    return Tensor(np.asarray(data, dtype=dtype))


def _generator():
    return _state["rng"]


_state = {"rng": np.random.default_rng(0)}


def manual_seed(seed):
    _state["rng"] = np.random.default_rng(seed)


def randn(*shape):
    return Tensor(_generator().standard_normal(shape).astype(np.float32))


def arange(start, end=None, step=1, dtype=None):
    if end is None:
        start, end = 0, start
    return Tensor(np.arange(start, end, step, dtype=dtype or np.int64))


def eye(n, device=None, dtype=None):
    return Tensor(np.eye(n, dtype=dtype or np.float32))


def zeros(shape, device=None, dtype=None):
    return Tensor(np.zeros(shape, dtype=dtype or np.float32))


def full(shape, value):
    return Tensor(np.full(shape, value, dtype=np.float32))


def ones_like(t):
    return Tensor(np.ones_like(t.a))


def triu(t, diagonal=0):
    a = t.a.copy()
    rows, cols = a.shape[-2:]
    mask = np.triu(np.ones((rows, cols), dtype=bool), k=diagonal)
    return Tensor(np.where(mask, a, np.zeros((), dtype=a.dtype)))


def where(condition):
    return tuple(Tensor(i.astype(np.int64)) for i in np.nonzero(condition.a))


def cat(tensors, dim=0):
    return Tensor(np.concatenate([_arr(t) for t in tensors], axis=dim))


def matmul(a, b):
    return Tensor(np.matmul(_arr(a), _arr(b)))


def einsum(spec, *ops):
    return Tensor(np.einsum(spec.replace(" ", ""), *[_arr(o) for o in ops]))


def _softmax(x, dim=-1, dtype=None):
    a = x.a.astype(dtype) if dtype is not None else x.a
    m = a.max(axis=dim, keepdims=True)
    e = np.exp(a - m)
    return Tensor(e / e.sum(axis=dim, keepdims=True, dtype=e.dtype))


softmax = _softmax


def sort(t, descending=False):
    order = np.argsort(-t.a if descending else t.a, kind="stable")
    return types.SimpleNamespace(values=Tensor(np.take_along_axis(t.a, order, -1)),
                                 indices=Tensor(order))


class _NoGrad:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __call__(self, f):
        return f


no_grad = _NoGrad  # usable as `with torch.no_grad():` and as `@torch.no_grad()`

__version__ = "numpy-" + np.__version__


# ---- torch.nn and torch.nn.functional ---------------------------------------------------------


class Module:
    def __init__(self):
        pass

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)


class Identity(Module):
    def forward(self, x):
        return x


def avg_pool1d(x, kernel_size, padding=0, stride=1):
    assert stride == 1
    a = x.a
    padded = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(padding, padding)])
    n = padded.shape[-1] - kernel_size + 1
    out = np.zeros(a.shape[:-1] + (n,), dtype=a.dtype)
    for j in range(kernel_size):
        out = out + padded[..., j:j + n]
    return Tensor(out / np.asarray(kernel_size, dtype=a.dtype))


def pad(x, widths, value=0.0):
    left, right = widths
    a = x.a
    return Tensor(np.pad(a, [(0, 0)] * (a.ndim - 1) + [(left, right)],
                         constant_values=np.asarray(value, dtype=a.dtype)))


nn = types.ModuleType("torch.nn")
nn.Module = Module
nn.Identity = Identity
functional = types.ModuleType("torch.nn.functional")
functional.avg_pool1d = avg_pool1d
functional.pad = pad
functional.softmax = _softmax
nn.functional = functional
