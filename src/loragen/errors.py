"""Errors loragen raises on bad input: each message says what was expected and what was found."""


class LoragenError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class AdapterFileError(LoragenError):
    """An adapter folder is missing, incomplete, corrupt or not a PEFT LoRA adapter."""


class LayoutMismatchError(LoragenError):
    """Tensors or a model do not match the LoRA layout they are used with."""


class NonFiniteError(LoragenError):
    """Weights hold NaN or Inf."""


class ZooError(LoragenError):
    """A zoo is empty, missing, corrupt or inconsistent."""


class UnknownTaskError(LoragenError):
    """A task or condition names nothing the suite or zoo knows."""


class ConditionError(LoragenError, ValueError):
    """A condition lacks what its encoder needs, or has the wrong shape."""


class ConfigError(LoragenError):
    """A configuration value is outside what is allowed."""


class RequestError(LoragenError):
    """A service request is malformed, outside the service's limits or names nothing it knows (an HTTP 4xx)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status
