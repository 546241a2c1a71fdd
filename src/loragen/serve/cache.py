"""AdapterCache: generated adapters kept by the request that made them (condition + n + seed), bounded, LRU.

An identical request is answered from the cache instead of regenerating. The bound counts adapters, not requests,
so memory stays flat however many distinct conditions arrive; the id of an evicted adapter answers 404.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import torch

from loragen.adapters.adapter import Adapter
from loragen.serve.schemas import AdapterRequest


def request_key(body: AdapterRequest, images: torch.Tensor | None = None) -> str:
    """A hex digest of everything that decides the adapters: the condition, n and seed (images (K, H, W), checked
    already, by their float32 bytes and shape)."""
    digest = None
    if images is not None:
        digest = hashlib.sha256(images.float().contiguous().numpy().tobytes()).hexdigest() + str(tuple(images.shape))
    fields = {"task": body.task, "description": body.description, "label": body.label, "images": digest,
              "examples": [[e.text, e.label] for e in body.examples] if body.examples is not None else None,
              "n": body.n, "seed": body.seed}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


class AdapterCache:
    """key -> ids, id -> Adapter; at most `capacity` adapters, the least recently used request evicted first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._ids: OrderedDict[str, list[str]] = OrderedDict()  # request key -> adapter ids, oldest first
        self._adapters: dict[str, Adapter] = {}  # adapter id -> adapter
        self._key_of: dict[str, str] = {}  # adapter id -> request key

    def __len__(self) -> int:
        return len(self._adapters)

    def get(self, key: str) -> list[str] | None:
        """The ids made for this request key (now the most recent), or None."""
        ids = self._ids.get(key)
        if ids is not None:
            self._ids.move_to_end(key)
        return ids

    def put(self, key: str, adapters: list[Adapter]) -> list[str]:
        """Keep the adapters of one request; returns their ids ("<key prefix>-<i>")."""
        if key in self._ids:
            return self.get(key)
        ids = [f"{key[:24]}-{i}" for i in range(len(adapters))]
        self._ids[key] = ids
        for i, a in zip(ids, adapters):
            self._adapters[i], self._key_of[i] = a, key
        while len(self._adapters) > self.capacity and len(self._ids) > 1:
            _, old = self._ids.popitem(last=False)
            for i in old:
                del self._adapters[i], self._key_of[i]
        return ids

    def adapter(self, adapter_id: str) -> Adapter | None:
        """The adapter of an id (its request becomes the most recent), or None when unknown or evicted."""
        a = self._adapters.get(adapter_id)
        if a is not None:
            self._ids.move_to_end(self._key_of[adapter_id])
        return a
