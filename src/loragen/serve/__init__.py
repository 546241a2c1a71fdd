"""`loragen serve`: adapters on demand over HTTP, and predictions with many adapters in one batch.

One concept per file:
  config.py    ServeConfig: where, how big, how long (every limit of the service)
  api_key.py   ApiKey: the shared secret of every route but health, read from a file
  schemas.py   the request and response bodies (pydantic, with their limits)
  inputs.py    InputCodec: a suite's inputs as JSON (texts or images) -> a model batch, checked
  cache.py     AdapterCache: a bounded LRU of generated adapters by condition, n and seed
  batcher.py   MicroBatcher: concurrent predict requests grouped into one forward pass (bounded size, wait, queue)
  service.py   Service: the generator, its suite's base model and the one thread that runs torch
  metrics.py   Metrics: request counts, latency, batch sizes, cache hits in Prometheus' text format
  app.py       create_app: the FastAPI routes and error handlers
  page.html    the web page at / (plain HTML + JS)
  server.py    run: check the binding, load, start uvicorn

Shapes: B samples in a micro-batch (each with its own adapter), C distinct adapters in it, N inputs of one request.
"""

from loragen.serve.config import ServeConfig

__all__ = ["ServeConfig"]
