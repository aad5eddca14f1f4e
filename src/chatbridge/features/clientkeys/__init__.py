"""Client keys (VALID_API_KEY, CLIENT_KEYS_FILE, the admin API), their limits and their usage."""

from chatbridge.features.clientkeys.limits import Admission, Limiter, LimitExceeded, ModelNotAllowed
from chatbridge.features.clientkeys.service import ClientKeys, KeyConflict
from chatbridge.features.clientkeys.spec import ClientKey, KeyLimits, KeysFileError, parse_keys, read_keys_file
from chatbridge.features.clientkeys.usage import UsageRecorder

__all__ = [
    "Admission",
    "ClientKey",
    "ClientKeys",
    "KeyConflict",
    "KeyLimits",
    "KeysFileError",
    "LimitExceeded",
    "Limiter",
    "ModelNotAllowed",
    "UsageRecorder",
    "parse_keys",
    "read_keys_file",
]
