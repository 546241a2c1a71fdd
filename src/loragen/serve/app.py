"""create_app: the service's routes, its one middleware (size limit, API key, metrics) and its error handlers.

Every 4xx body is {"detail": "<field>: expected …; found …"}. A request that fails is answered and counted; the
server and other requests go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import tempfile
import time
import zipfile
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from loragen.errors import LoragenError, RequestError
from loragen.serve.api_key import ApiKey
from loragen.serve.config import ServeConfig
from loragen.serve.metrics import Metrics
from loragen.serve.schemas import AdapterRequest, AdapterResponse, PredictRequest, PredictResponse, parse
from loragen.serve.service import Service

log = logging.getLogger("loragen.serve")
OPEN = ("/healthz", "/readyz")  # the routes that need no key: health
BROWSER = ("/", "/docs", "/openapi.json", "/docs/oauth2-redirect")  # a 401 here asks the browser for Basic credentials
PAGE = Path(__file__).with_name("page.html")


def _json_body(model) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"expected a body of at most {limit} bytes; found {declared}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"expected a body of at most {limit} bytes; found more", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _upload(request: Request, raw: bytes) -> AdapterRequest:
    """multipart/form-data: a safetensors file `images` holding a tensor 'images' (K, H, W), and fields n, seed."""
    from safetensors.torch import load as load_safetensors

    async def replay():  # the body was already read (and its size checked): hand it to the form parser again
        return {"type": "http.request", "body": raw, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=4)
    upload = form.get("images")
    if upload is None or isinstance(upload, str):
        raise RequestError(f"images: expected a safetensors file field 'images'; found fields {sorted(form.keys())}")
    data = await upload.read()
    try:
        tensors = load_safetensors(data)
    except Exception as e:  # safetensors raises several types on garbled bytes
        raise RequestError(f"images: expected a safetensors file; found {len(data)} bytes it cannot read ({e})") from e
    if "images" not in tensors:
        raise RequestError(f"images: expected a tensor 'images' (K, H, W) in the file; found tensors {sorted(tensors)[:5]}")
    fields = {k: form.get(k) for k in ("n", "seed") if form.get(k) is not None}
    body = {"images": tensors["images"].float().tolist()} | fields
    return AdapterRequest.model_validate(body)


def create_app(config: ServeConfig, service: Service | None = None) -> FastAPI:
    """The FastAPI app; the generator loads in the background after start-up (/readyz says when)."""
    metrics = Metrics()
    service = service or Service(config, metrics)
    api_key = ApiKey.from_file(config.api_key_file) if config.api_key_file is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(service.start())
        yield
        task.cancel()
        await service.stop()

    app = FastAPI(title="loragen", version="1", lifespan=lifespan,
                  description="LoRA adapters generated from a condition, and predictions with many adapters in one batch.")
    app.state.service = service

    @app.middleware("http")
    async def guard(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        if api_key is not None and path not in OPEN:
            problem = api_key.problem(request.headers)
            if problem is not None:
                challenge = 'Basic realm="loragen", charset="UTF-8"' if path in BROWSER else "Bearer"
                response = JSONResponse({"detail": problem}, 401, headers={"WWW-Authenticate": challenge})
                _count(request, response, t0)
                return response
        try:
            response = await call_next(request)
        except Exception:  # anything the handlers did not turn into a 4xx: answered, logged, counted; the server goes on
            log.exception("request %s %s failed", request.method, path)
            response = JSONResponse({"detail": "internal error; the server logged it"}, 500)
        _count(request, response, t0)
        return response

    def _count(request: Request, response: Response, t0: float) -> None:
        name = _route_name(app, request.scope)
        metrics.requests.labels(name, str(response.status_code)).inc()
        metrics.latency.labels(name).observe(time.perf_counter() - t0)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError):
        headers = {"Retry-After": "1"} if e.status == 429 else None
        return JSONResponse({"detail": str(e)}, e.status, headers=headers)

    @app.exception_handler(LoragenError)
    async def loragen_error(request: Request, e: LoragenError):
        return JSONResponse({"detail": str(e)}, 422)

    # ---- health and the page -----------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """The process answers (no key needed)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz():
        """200 once the generator and base model are loaded, 503 before (or if loading failed)."""
        body = {"status": service.state} | ({"error": service.error} if service.error else {})
        return JSONResponse(body, 200 if service.state == "ready" else 503)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(PAGE.read_text())

    @app.get("/metrics", tags=["health"])
    async def prometheus():
        """Request counts, latency, micro-batch sizes, queue depth and cache hits (Prometheus text format)."""
        return Response(metrics.text(), media_type=metrics.content_type)

    # ---- v1 ----------------------------------------------------------------------------------------------------
    @app.get("/v1/info", tags=["v1"])
    async def info() -> dict:
        """The generator's suite, what inputs predict takes, the suite's tasks and the limits."""
        return service.info()

    @app.post("/v1/adapters", tags=["v1"], response_model=AdapterResponse, openapi_extra=_json_body(AdapterRequest) | {
        "description": "A JSON condition, or multipart/form-data with a safetensors file `images` (a tensor 'images' "
                       "(K, H, W)) and fields n, seed."})
    async def create_adapters(request: Request):
        """Adapter ids for a condition; an identical condition (with n and seed) is answered from the cache."""
        raw = await read_body(request, config.max_upload_bytes)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            try:
                body = await _upload(request, raw)
            except ValueError as e:  # pydantic's ValidationError is one
                from pydantic import ValidationError

                from loragen.serve.schemas import describe

                raise RequestError(describe(e) if isinstance(e, ValidationError) else f"expected a multipart form; found {e}") from e
        else:
            body = parse(AdapterRequest, raw)
        ids, cached, ms = await service.adapters(body)
        return AdapterResponse(ids=ids, cached=cached, generate_ms=round(ms, 3), suite=service.suite.name)

    @app.get("/v1/adapters/{adapter_id}", tags=["v1"], responses={200: {"content": {"application/zip": {}}}})
    async def download(adapter_id: str):
        """The adapter as a zipped PEFT folder (adapter_config.json, adapter_model.safetensors) for
        PeftModel.from_pretrained."""
        adapter = service.adapter(adapter_id)
        data = await asyncio.to_thread(_zip, adapter)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="adapter-{adapter_id}.zip"'})

    @app.post("/v1/predict", tags=["v1"], response_model=PredictResponse, openapi_extra=_json_body(PredictRequest))
    async def predict(request: Request):
        """Predictions for inputs under an adapter (by id, or an inline condition), micro-batched with other requests."""
        body = parse(PredictRequest, await read_body(request, config.max_upload_bytes))
        return await service.predict(body)

    return app


def _route_name(app: FastAPI, scope) -> str:
    """The route template a request matches ("/v1/adapters/{adapter_id}"), also when it never reached it (a 401);
    metrics are labelled by it, so their number stays bounded whatever paths clients send."""
    from starlette.routing import Match

    for route in app.router.routes:
        if route.matches(scope)[0] == Match.FULL:
            return route.path
    return "unmatched"


def _zip(adapter) -> bytes:
    """A PEFT folder, zipped with its files at the top level."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = adapter.save(Path(tmp) / "adapter")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(folder.iterdir()):
                z.write(f, f.name)
        return buf.getvalue()
