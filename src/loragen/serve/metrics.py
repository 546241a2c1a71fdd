"""Metrics: what the service counts, in Prometheus' text format at /metrics (its own registry, so that several apps
in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("loragen_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("loragen_request_seconds", "HTTP request latency by route", ["route"], registry=r,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch_samples = Histogram("loragen_batch_samples", "samples per micro-batch forward", registry=r, buckets=SIZES)
        self.batch_requests = Histogram("loragen_batch_requests", "requests per micro-batch forward", registry=r, buckets=SIZES)
        self.queue_depth = Gauge("loragen_queue_depth", "predict requests waiting", registry=r)
        self.rejected = Counter("loragen_queue_rejected", "predict requests answered 429 (queue full)", registry=r)
        self.cache_hits = Counter("loragen_adapter_cache_hits", "adapter requests answered from the cache", registry=r)
        self.cache_misses = Counter("loragen_adapter_cache_misses", "adapter requests that generated", registry=r)
        self.cached = Gauge("loragen_cached_adapters", "adapters held in the cache", registry=r)
        self.generate = Histogram("loragen_generate_seconds", "time to generate the adapters of one request", registry=r,
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))

    def text(self) -> bytes:
        return generate_latest(self.registry)
