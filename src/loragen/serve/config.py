"""ServeConfig: everything `loragen serve` can be told, checked on creation."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loragen.errors import ConfigError
from loragen.generators.hyper.items import PRECISIONS


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


@dataclass
class ServeConfig:
    generator: Path  # trained generator folder (hyper or pdiff); it records its suite
    host: str = "127.0.0.1"  # bind address; anything but loopback needs api_key_file
    port: int = 8000  # TCP port
    api_key_file: Path | None = None  # file holding the API key; when given, every route but health needs it
    mode: Literal["batched", "merge"] = "batched"  # batched: per-sample LoRA in one forward; merge: one request at a time (the baseline)
    max_batch: int = 64  # most samples in one micro-batch forward
    max_wait_ms: float = 5.0  # longest a request waits for others to join its micro-batch
    queue_size: int = 256  # most predict requests waiting; more are answered 429
    cache_adapters: int = 512  # most generated adapters kept (LRU); ids of evicted ones answer 404
    max_n: int = 8  # most adapters per POST /v1/adapters
    max_inputs: int = 64  # most inputs (texts or images) per predict request
    max_text_chars: int = 2000  # longest description, example or input text
    max_examples: int = 64  # most labelled examples in a condition
    max_images: int = 128  # most exemplar images in a condition
    max_upload_bytes: int = 8 * 2**20  # largest request body (JSON or a safetensors upload)
    # the examples encoder's base-model pass (hyper generators); None: the generator's own (HyperConfig.condition_precision)
    condition_precision: Literal["fp32", "bf16", "auto"] | None = None
    # ... compiled (torch.compile) where the suite has a compiled path (text-topics: a cold generate 7–15% faster in one
    # process, ~10% in the median of 5 timing runs); the warm-up at start compiles (~25 s)
    compile_conditions: bool = False
    threads: int = 1  # torch intra-op threads of the model thread (the event loop needs a core too; on 2 busy cores, 2 threads made a 0.5 ms generation take 64 ms)

    def __post_init__(self):
        self.generator = Path(self.generator)
        if self.mode not in ("batched", "merge"):
            raise ConfigError(f"mode must be 'batched' or 'merge'; found {self.mode!r}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1 … 65535; found {self.port}")
        for name in ("max_batch", "queue_size", "cache_adapters", "max_n", "max_inputs", "max_text_chars", "max_examples",
                     "max_images", "max_upload_bytes", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1; found {getattr(self, name)}")
        if self.condition_precision is not None and self.condition_precision not in PRECISIONS:
            raise ConfigError(f"condition_precision must be one of {PRECISIONS}; found {self.condition_precision!r}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0; found {self.max_wait_ms}")
        if self.max_inputs > self.max_batch:
            raise ConfigError(f"max_inputs must be <= max_batch ({self.max_batch}), so one request fits a batch; found {self.max_inputs}")
        if self.cache_adapters < self.max_n:
            raise ConfigError(f"cache_adapters must be >= max_n ({self.max_n}); found {self.cache_adapters}")
        if self.api_key_file is None and not is_loopback(self.host):
            raise ConfigError(f"binding to {self.host!r} (not loopback) needs an API key: expected --api-key-file; found none")
