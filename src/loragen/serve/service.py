"""Service: the generator, its suite's base model, the adapter cache and the micro-batcher, with one thread that runs
every torch call (generation and forward passes share the base model, so they never overlap)."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from loragen.adapters.apply import merged
from loragen.adapters.batched import batched_lora, stack_adapters
from loragen.conditions import Condition
from loragen.errors import ConfigError, LoragenError, RequestError
from loragen.serve.batcher import Job, MicroBatcher
from loragen.serve.cache import AdapterCache, request_key
from loragen.serve.config import ServeConfig
from loragen.serve.inputs import CODECS, InputCodec, images_tensor
from loragen.serve.metrics import Metrics
from loragen.serve.schemas import AdapterRequest, ConditionBody, PredictRequest, check_condition
from loragen.suites import completion

CLEAR_ENCODER_EVERY = 2000  # generations between clearing the condition encoders' caches (they grow per distinct text)


class Service:
    """Everything behind the routes. `load` runs on the model thread; the async methods run on the event loop."""

    def __init__(self, config: ServeConfig, metrics: Metrics | None = None):
        self.config, self.metrics = config, metrics or Metrics()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="loragen-torch")
        self.cache = AdapterCache(config.cache_adapters)
        self.state, self.error = "loading", None  # loading | ready | failed
        self.gen = self.suite = self.base = self.codec = None
        self.batcher: MicroBatcher | None = None
        self._inflight: dict[str, asyncio.Future] = {}  # request key -> ids being generated (identical requests wait)
        self._generated = 0
        self._samples = None

    # ---- start -------------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Generator, suite and base model (on the model thread)."""
        from loragen.generators.base import CONFIG_FILE, load_generator
        from loragen.suites import get_suite

        torch.set_num_threads(self.config.threads)
        path = self.config.generator
        if not (path / CONFIG_FILE).is_file():
            raise LoragenError(f"expected a trained generator ({CONFIG_FILE}) in {path}; found none")
        meta = json.loads((path / CONFIG_FILE).read_text())
        if not meta.get("suite"):
            raise LoragenError(f"{path}: expected a generator that records its suite; found none")
        self.suite = get_suite(meta["suite"], **(meta.get("suite_args") or {}))
        self.gen = load_generator(path, suite=self.suite)
        encoder = getattr(getattr(self.gen, "items", None), "encoder", None)
        if self.config.condition_precision is not None:  # else the generator's own
            if encoder != "examples" and self.config.condition_precision == "bf16":  # fp32 and auto: nothing to do
                raise ConfigError(f"condition_precision {self.config.condition_precision!r} applies to the examples encoder of a "
                                  f"hyper generator; found a {self.gen.name!r} generator with encoder {encoder!r}")
            if encoder == "examples":
                self.gen.items.precision = self.config.condition_precision
        if self.config.compile_conditions:
            if encoder != "examples":
                raise ConfigError(f"compile_conditions applies to the examples encoder of a hyper generator; found a "
                                  f"{self.gen.name!r} generator with encoder {encoder!r}")
            self.gen.items.compiled = True
        self.base = self.suite.base_model().eval().requires_grad_(False)
        self.gen.layout.check_model(self.base)
        try:
            self.codec = InputCodec(self.suite)
        except RequestError:
            self.codec = None  # adapters only: predict answers 501
        if self.suite.tasks():  # warm up (first-call allocations, compiling), so that a client's first request is not the one to pay
            first = self.suite.tasks()[0].name
            try:
                self.gen.generate(self.suite.condition(first), n=1)
            except LoragenError:
                pass  # a generator that takes another kind of condition: no warm-up
        self._samples = None  # a few test images of the suite's first task, for the page to try (image suites)
        if self.codec is not None and self.codec.kind == "images":
            self._samples = self.suite.data(self.suite.tasks()[0].name, "test").x[:8].tolist()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        run = self._run_batched if self.config.mode == "batched" else self._run_merged
        self.batcher = MicroBatcher(run, self.executor, self.config.max_batch, self.config.max_wait_ms / 1000,
                                    self.config.queue_size, self.metrics, group=self.config.mode == "batched")
        await self.batcher.start()
        try:
            await loop.run_in_executor(self.executor, self.load)
            self.state = "ready"
        except Exception as e:  # readyz reports it; the process stays up for health checks and logs
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def info(self) -> dict:
        self._ready()
        return {"suite": self.suite.name, "generator": self.gen.name, "mode": self.config.mode,
                "inputs": self.codec.kind if self.codec else None,
                "image_size": list(self.codec.image_size) if self.codec and self.codec.image_size else None,
                "labels": self.codec.labels if self.codec else None,
                "tasks": [t.name for t in self.suite.tasks()][:200],
                "sample_images": self._samples,
                "limits": {k: getattr(self.config, k) for k in ("max_n", "max_inputs", "max_text_chars", "max_examples",
                                                                 "max_images", "max_upload_bytes")}}

    def _ready(self) -> None:
        if self.state != "ready":
            raise RequestError(f"expected a loaded generator; found the service {self.state}"
                               + (f" ({self.error})" if self.error else ""), 503)

    # ---- adapters ----------------------------------------------------------------------------------------------
    def images(self, c: ConditionBody) -> torch.Tensor | None:
        """(K, H, W) exemplar images of a body, checked (the suite's image size where it has one), or None."""
        if c.images is None:
            return None
        if self.codec is not None and self.codec.kind == "images":
            return images_tensor(c.images, self.codec.image_size, "images")
        rows = c.images[0] if c.images else []
        return images_tensor(c.images, (len(rows), len(rows[0]) if rows else 0), "images")

    def condition(self, c: ConditionBody, images: torch.Tensor | None) -> Condition:
        """A library Condition from a checked body (on the model thread: a task's exemplars come from the suite)."""
        if c.task is not None:
            try:
                return self.suite.condition(c.task)
            except LoragenError as e:
                raise RequestError(f"task: {e}") from e
        if c.description is not None:
            return Condition(task="custom", text=c.description, examples=[f"{e.text!r} -> {e.label}" for e in c.examples or []])
        if images is not None:
            return Condition(task="custom", images=images)
        return Condition(task="custom", label=c.label)

    def _generate(self, body: AdapterRequest, images: torch.Tensor | None):
        cond = self.condition(body, images)
        t0 = time.perf_counter()
        try:
            adapters = self.gen.generate(cond, n=body.n, seed=body.seed)
        except LoragenError as e:
            raise RequestError(f"condition: {e}") from e
        ms = 1000 * (time.perf_counter() - t0)
        self._generated += 1
        if self._generated % CLEAR_ENCODER_EVERY == 0 and hasattr(self.gen, "items"):
            self.gen.items.clear_cache()
        return adapters, ms

    async def adapters(self, body: AdapterRequest) -> tuple[list[str], bool, float]:
        """(ids, cached, generate_ms) for a request; identical concurrent requests generate once."""
        self._ready()
        c = self.config
        if body.n > c.max_n:
            raise RequestError(f"n: expected at most {c.max_n} adapters per request; found {body.n}", 413)
        check_condition(body, c.max_text_chars, c.max_examples, c.max_images)
        images = self.images(body)
        key = request_key(body, images)
        ids = self.cache.get(key)
        if ids is not None:
            self.metrics.cache_hits.inc()
            return ids, True, 0.0
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key]), True, 0.0
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            adapters, ms = await asyncio.get_running_loop().run_in_executor(self.executor, self._generate, body, images)
            ids = self.cache.put(key, adapters)
            self.metrics.cache_misses.inc()
            self.metrics.generate.observe(ms / 1000)
            self.metrics.cached.set(len(self.cache))
            future.set_result(ids)
            return ids, False, ms
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # marks it retrieved: nobody else may be waiting
            raise
        finally:
            del self._inflight[key]

    def adapter(self, adapter_id: str):
        self._ready()
        a = self.cache.adapter(adapter_id)
        if a is None:
            raise RequestError(f"expected an adapter id from POST /v1/adapters (kept for the last {self.config.cache_adapters} "
                               f"adapters); found unknown id {adapter_id!r}", 404)
        return a

    # ---- predict -----------------------------------------------------------------------------------------------
    async def predict(self, body: PredictRequest) -> dict:
        """Predictions (a causal LM: replies) for the inputs under the request's adapter, through the micro-batcher."""
        self._ready()
        if self.codec is None:
            raise RequestError(f"predict: expected a generator of one of {CODECS}; found one of {self.suite.name!r}", 501)
        if (body.adapter_id is None) == (body.condition is None):
            raise RequestError("expected exactly one of adapter_id, condition; found "
                               + ("both" if body.adapter_id is not None else "neither"))
        c, loop = self.config, asyncio.get_running_loop()
        if self.codec.kind == "images":  # a tensor from lists, here: cheaper than a hop to the model thread and a wait
            x = self.codec.batch(body.texts, body.images, c.max_inputs, c.max_text_chars)  # behind the forward running there
        else:  # tokenising runs on the model thread: the tokenizer is shared with the examples encoder
            x = await loop.run_in_executor(self.executor, self.codec.batch, body.texts, body.images, c.max_inputs, c.max_text_chars)
        if body.adapter_id is not None:
            adapter_id = body.adapter_id
        else:
            ids, _, _ = await self.adapters(body.condition)
            adapter_id = ids[0]
        out, batch = await self.batcher.submit(adapter_id, self.adapter(adapter_id), x)
        if self.codec.kind == "prompts":
            return {"adapter_id": adapter_id, "completions": out, "batch_size": batch}
        probs = torch.softmax(out.float(), -1)  # (N, C)
        pred = probs.argmax(-1).tolist()
        return {"adapter_id": adapter_id, "predictions": pred, "probabilities": probs.tolist(), "batch_size": batch,
                "labels": [self.codec.labels[p] for p in pred] if self.codec.labels else None}

    def _infer(self, x: torch.Tensor) -> torch.Tensor | list[str]:
        """The base model's answer to a batch, under whatever adapter is applied: logits (B, C), or a causal LM's
        greedy replies (B strings)."""
        if self.codec.kind == "prompts":
            return completion.greedy_replies(self.base, self.suite.tokenizer(), x, self.suite.answer_tokens)
        return self.suite.forward(self.base, x)

    @torch.no_grad()
    def _run_batched(self, jobs: list[Job]) -> list:
        """Every job's inputs in the codec's forward passes (one, or texts in chunks of similar lengths), sample b
        under its own job's adapter (per-sample batched LoRA; a causal LM's whole generation runs so, its KV cache
        included)."""
        order = list(dict.fromkeys(j.adapter_id for j in jobs))  # C distinct adapters
        adapters = {j.adapter_id: j.adapter for j in jobs}
        stacked = stack_adapters([adapters[i] for i in order])  # {key: (C, ...)}
        which = torch.cat([torch.full((len(j.x),), order.index(j.adapter_id)) for j in jobs])  # (B,) adapter of each sample
        idx, outs = [], []
        for rows, x in self.codec.passes(self.codec.collate([j.x for j in jobs])):  # texts: of similar lengths each
            with batched_lora(self.base, self.gen.layout, {k: v[which[rows]] for k, v in stacked.items()}):  # (b, ...)
                outs.append(self._infer(x))
            idx.append(rows)
        back = torch.cat(idx).argsort().tolist()  # the passes' samples back in the jobs' order
        if isinstance(outs[0], torch.Tensor):
            out = torch.cat(outs)[back]
        else:  # a causal LM's replies
            replies = [r for o in outs for r in o]
            out = [replies[i] for i in back]
        ends = torch.tensor([len(j.x) for j in jobs]).cumsum(0).tolist()
        return [out[e - len(j.x) : e] for j, e in zip(jobs, ends)]

    @torch.no_grad()
    def _run_merged(self, jobs: list[Job]) -> list:
        """The baseline: each job alone, its adapter merged into the weights and restored after."""
        out = []
        for j in jobs:
            with merged(self.base, j.adapter):
                out.append(self._infer(self.codec.collate([j.x])))
        return out
