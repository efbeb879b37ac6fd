"""attnkit: KV cache eviction, sparse prefill attention and visual token pruning.

Python binding over attnkit's C ABI (libattnkit). Objects are context managers::

    import attnkit
    from attnkit import attnkit_pb2

    config = attnkit_pb2.SessionConfig(num_layers=5, num_heads=8, num_kv_heads=4, head_dim=8)
    with attnkit.Session(config) as session:
        out = session.attend(0, q, k, v)   # numpy/torch tensors via __dlpack__, no copies

Errors raise subclasses of :class:`attnkit.Error` (``.code``, ``.message``).
"""

from attnkit import _attnkit, errors as _errors
from attnkit.errors import *  # noqa: F401,F403
from attnkit.errors import from_status as _from_status


def _check_abi(library_abi: int, header_abi: int) -> None:
    """Refuses a libattnkit whose ABI major version differs from the headers this was built with."""
    if library_abi != header_abi:
        raise ImportError(
            f"attnkit: libattnkit has ABI version {library_abi}, but attnkit._attnkit was built "
            f"against ABI version {header_abi}; rebuild or reinstall the Python package")


_check_abi(_attnkit.abi_version(), _attnkit.HEADER_ABI_VERSION)
_attnkit.set_error_factory(_from_status)

from attnkit import attnkit_pb2  # noqa: E402
from attnkit._config import parse as parse_config, to_text as config_to_text  # noqa: E402
from attnkit._config import validate as validate_config  # noqa: E402
from attnkit.eviction import EvictionPolicy  # noqa: E402
from attnkit.session import Session  # noqa: E402
from attnkit.sparse import SparseAttention  # noqa: E402
from attnkit.visual import VisualPruner, VisualSelection  # noqa: E402

__version__ = _attnkit.version_string()
ABI_VERSION = _attnkit.abi_version()


def set_num_threads(num_threads: int) -> None:
    """Threads every computing call of the library uses from now on, in every thread: 1 to 1024,
    or 0 (the default) for the OpenMP default (OMP_NUM_THREADS, else one per core). The calling
    thread's own OpenMP setting is given back after each call. Raises InvalidArgument outside
    [0, 1024]."""
    _attnkit.set_num_threads(num_threads)


def get_num_threads() -> int:
    """The value last given to set_num_threads() (0: the default)."""
    return _attnkit.get_num_threads()


__all__ = ["Session", "EvictionPolicy", "SparseAttention", "VisualPruner", "VisualSelection",
           "attnkit_pb2", "parse_config", "config_to_text", "validate_config", "ABI_VERSION",
           "__version__", "set_num_threads", "get_num_threads"]
# In this form (not a concatenation) type checkers read the re-exports too.
__all__ += _errors.__all__
