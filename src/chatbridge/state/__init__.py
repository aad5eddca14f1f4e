"""Where shared state lives: pool health, sessions, rate-limit and usage counters, refresh tokens.

`StateStore` is the interface; `MemoryStore` keeps state in process memory, `EmbeddedStore`
adds one JSON file under DATA_DIR for the durable keys. A Redis backend, shared by replicas,
implements the same interface.
"""

from chatbridge.state.base import StateStore, StateTypeError, StoreState
from chatbridge.state.embedded import STATE_FILE_NAME, EmbeddedStore
from chatbridge.state.memory import MemoryStore
from chatbridge.state.namespace import Namespace

__all__ = [
    "STATE_FILE_NAME",
    "EmbeddedStore",
    "MemoryStore",
    "Namespace",
    "StateStore",
    "StateTypeError",
    "StoreState",
]
