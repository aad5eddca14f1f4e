"""Where shared state lives: pool health, sessions, rate-limit and usage counters, refresh tokens.

`StateStore` is the interface; `MemoryStore` keeps state in process memory, `EmbeddedStore`
adds one JSON file under DATA_DIR for the durable keys; `RedisStore` (chatbridge.state.redis),
shared by replicas, implements the same interface, with pub/sub, locks and stream slots.
"""

from chatbridge.state.base import RESYNC, StateStore, StateTypeError, StoreState, StoreStatus, Subscription
from chatbridge.state.embedded import STATE_FILE_NAME, EmbeddedStore
from chatbridge.state.memory import MemoryStore
from chatbridge.state.namespace import Namespace

__all__ = [
    "RESYNC",
    "STATE_FILE_NAME",
    "EmbeddedStore",
    "MemoryStore",
    "Namespace",
    "StateStore",
    "StateTypeError",
    "StoreState",
    "StoreStatus",
    "Subscription",
]
