"""Every attnkit.v1 configuration and result message in one module.

The classes come from the modules protoc generates from proto/attnkit/v1/*.proto at build time
(``attnkit.v1.<name>_pb2``); this module only gathers them, so users write
``attnkit_pb2.SessionConfig(...)``.
"""

from attnkit.v1.eviction_pb2 import *  # noqa: F401,F403
from attnkit.v1.session_pb2 import *  # noqa: F401,F403
from attnkit.v1.sparse_attention_pb2 import *  # noqa: F401,F403
from attnkit.v1.visual_pruning_pb2 import *  # noqa: F401,F403
