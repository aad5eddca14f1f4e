"""The base of every model a client's request body is validated into, in either API's dialect."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ClientModel(BaseModel):
    """Unknown fields are kept (forwarded where an upstream speaks the same API); `NaN` and
    `Infinity` are refused as not finite, since they would pass every bound check unnoticed."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
