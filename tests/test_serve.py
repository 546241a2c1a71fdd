"""loragen serve: a real uvicorn server in a subprocess on a free loopback port, driven by httpx (and a headless
Chromium for the page); the micro-batcher and the adapter cache in process."""

import asyncio
import io
import json
import os
import shutil
import subprocess
import threading
import urllib.parse
import zipfile

import httpx
import pytest
import torch
from typer.testing import CliRunner

from loragen.adapters.adapter import Adapter
from loragen.adapters.apply import merged
from loragen.errors import ConfigError, RequestError
from loragen.generators import load_generator
from loragen.generators.hyper import HyperConfig, HyperGenerator
from loragen.serve.batcher import MicroBatcher
from loragen.serve.cache import AdapterCache
from loragen.serve.config import ServeConfig
from loragen.serve.process import ServerProcess
from loragen.suites import get_suite

KEY = "serve-test-key-0123456789"
TINY = dict(width=32, cond_dim=16, module_dim=8, tasks_per_step=3, examples_per_task=16, checkpoint_every=20)
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def digits():
    return get_suite("digits-domains", n_tasks=5, n_extrapolation=1)


@pytest.fixture(scope="module")
def digits_gen_dir(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "gen"
    tasks = [t.name for t in digits.tasks() if t.params["where"] == "inside"]
    HyperGenerator.fit(HyperConfig(steps=30, **TINY), suite=digits, tasks=tasks, out=out, show=False)
    return out


@pytest.fixture(scope="module")
def server(digits_gen_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    (tmp / "key").write_text(KEY + "\n")
    s = ServerProcess(digits_gen_dir, tmp / "server.log", "--threads", "1", "--api-key-file", str(tmp / "key"), "--max-wait-ms", "20",
                      env=os.environ | {"OMP_NUM_THREADS": "1"})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def local(digits_gen_dir, digits):
    """The same generator and base model in this process: what the service must agree with."""
    return load_generator(digits_gen_dir), digits.base_model()


def expected_probs(local, images_KHW, x_NHW, n=1, seed=0, which=0):
    gen, base = local
    from loragen.conditions import Condition

    adapter = gen.generate(Condition(task="custom", images=images_KHW), n=n, seed=seed)[which]
    with merged(base, adapter), torch.no_grad():
        return torch.softmax(base(x_NHW), -1), adapter


def test_health_auth_docs_and_metrics(server, client):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}  # no key needed
    assert httpx.get(server.url + "/readyz").json()["status"] == "ready"
    for path in ("/v1/info", "/metrics"):
        r = httpx.get(server.url + path)
        assert r.status_code == 401 and "expected an API key" in r.json()["detail"] and "found none" in r.json()["detail"]
        r = httpx.get(server.url + path, headers={"X-API-Key": "wrong-key-wrong-key-wrong"})
        assert r.status_code == 401 and "found a different key" in r.json()["detail"]
    r = httpx.post(server.url + "/v1/adapters", json={"task": "x"})
    assert r.status_code == 401
    info = client.get("/v1/info", headers={"Authorization": "", "X-API-Key": KEY}).json()
    assert info["suite"] == "digits-domains" and info["inputs"] == "images" and info["image_size"] == [16, 16]
    for path in ("/", "/docs", "/openapi.json"):  # the page and the docs too; a browser is asked for Basic credentials
        r = httpx.get(server.url + path)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(server.url + path, auth=("anyone", "wrong-key-wrong-key-wrong")).status_code == 401
        assert httpx.get(server.url + path, auth=("anyone", KEY)).status_code == 200
    assert httpx.get(server.url + "/v1/info", headers={"Authorization": "Basic !!!"}).status_code == 401  # malformed
    schema = client.get("/openapi.json").json()
    assert {"/v1/adapters", "/v1/adapters/{adapter_id}", "/v1/predict", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    assert 'id="keybox"' in client.get("/").text
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "text/plain" in metrics.headers["content-type"]
    assert 'loragen_requests_total{route="/v1/info",status="401"}' in metrics.text


def test_refuses_to_bind_beyond_loopback_without_a_key(tmp_path):
    with pytest.raises(ConfigError, match="needs an API key"):
        ServeConfig(tmp_path, host="0.0.0.0")
    ServeConfig(tmp_path, host="::1")  # loopback is fine
    from loragen.cli import app

    r = CliRunner().invoke(app, ["serve", "--generator", str(tmp_path), "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "needs an API key" in " ".join(r.output.split())


def test_condition_precision_and_compiling_are_checked(digits_gen_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"condition_precision must be one of \('fp32', 'bf16', 'auto'\); found 'fp16'"):
        ServeConfig(tmp_path, condition_precision="fp16")
    from loragen.serve.service import Service

    service = Service(ServeConfig(digits_gen_dir, condition_precision="bf16"))  # an image-set generator: no examples pass
    threads = torch.get_num_threads()  # load() sets the process's torch threads
    try:
        with pytest.raises(ConfigError, match="applies to the examples encoder of a hyper generator; found a 'hyper' "
                                              "generator with encoder 'image-set'"):
            service.load()
        service.config.condition_precision, service.config.compile_conditions = None, True
        with pytest.raises(ConfigError, match="compile_conditions applies to the examples encoder of a hyper generator; "
                                              "found a 'hyper' generator with encoder 'image-set'"):
            service.load()
    finally:
        torch.set_num_threads(threads)
        service.executor.shutdown()


def test_adapters_are_cached_and_download_as_peft_folders(client, digits, local, tmp_path):
    task = digits.tasks()[0].name
    images = digits.condition(task).images  # (K, 16, 16)
    r = client.post("/v1/adapters", json={"images": images.tolist(), "n": 2, "seed": 3})
    assert r.status_code == 200, r.text
    first = r.json()
    assert len(first["ids"]) == 2 and not first["cached"] and first["suite"] == "digits-domains"
    again = client.post("/v1/adapters", json={"images": images.tolist(), "n": 2, "seed": 3}).json()
    assert again["ids"] == first["ids"] and again["cached"] and again["generate_ms"] == 0
    other = client.post("/v1/adapters", json={"images": images.tolist(), "n": 2, "seed": 4}).json()
    assert set(other["ids"]).isdisjoint(first["ids"])
    # the same images as a safetensors upload are the same condition
    from safetensors.torch import save

    up = client.post("/v1/adapters", files={"images": ("x.safetensors", save({"images": images.contiguous()}))},
                     data={"n": "2", "seed": "3"})
    assert up.status_code == 200, up.text
    assert up.json()["ids"] == first["ids"] and up.json()["cached"]

    # GET -> zip of a PEFT folder that PeftModel loads; its output equals the locally generated adapter's, merged
    z = client.get(f"/v1/adapters/{first['ids'][1]}")
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    folder = tmp_path / "adapter"
    zipfile.ZipFile(io.BytesIO(z.content)).extractall(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    x = digits.data(task, "test").x[:16]
    want, adapter = expected_probs(local, images, x, n=2, seed=3, which=1)
    # the same adapter up to float rounding: the server runs torch on one thread, this process on OMP_NUM_THREADS
    assert torch.allclose(Adapter.load(folder).vector(), adapter.vector(), atol=1e-6, rtol=0)
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(get_suite("digits-domains").base_model(), str(folder)).eval()
    with torch.no_grad():
        assert torch.allclose(torch.softmax(peft_model(x), -1), want, atol=1e-5)


def test_predictions_equal_a_local_merged_evaluation(client, digits, local):
    task = digits.tasks()[1].name
    images = digits.condition(task).images
    x = digits.data(task, "test").x[:12]
    want, _ = expected_probs(local, images, x)
    ids = client.post("/v1/adapters", json={"images": images.tolist()}).json()["ids"]
    r = client.post("/v1/predict", json={"adapter_id": ids[0], "images": x.tolist()})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["predictions"] == want.argmax(-1).tolist()
    assert torch.allclose(torch.tensor(got["probabilities"]), want, atol=1e-5)
    inline = client.post("/v1/predict", json={"condition": {"images": images.tolist()}, "images": x.tolist()}).json()
    assert inline["adapter_id"] == ids[0] and inline["predictions"] == got["predictions"]
    by_task = client.post("/v1/predict", json={"condition": {"task": task}, "images": x[:2].tolist()})
    assert by_task.status_code == 200 and len(by_task.json()["predictions"]) == 2


def test_bad_inputs_get_4xx_saying_what_was_expected(server, client, digits):
    task = digits.tasks()[0].name
    good_id = client.post("/v1/adapters", json={"task": task}).json()["ids"][0]
    img = [[0.5] * 16] * 16
    nan = [[float("nan")] * 16] * 16
    cases = [
        (dict(content=b'{"task": ', headers={"content-type": "application/json"}), "/v1/adapters", 400, "found malformed JSON"),
        (dict(content=b"[1, 2]"), "/v1/adapters", 422, "expected a JSON object; found a JSON list"),
        (dict(json={"task": task, "n": 99}), "/v1/adapters", 413, "expected at most 8 adapters per request; found 99"),
        (dict(json={"task": task, "n": 0}), "/v1/adapters", 422, "n: expected greater than or equal to 1; found 0"),
        (dict(json={"task": task, "colour": 1}), "/v1/adapters", 422, "colour: expected no such field"),
        (dict(json={}), "/v1/adapters", 422, "expected exactly one of task, description"),
        (dict(json={"task": "no-such-task"}), "/v1/adapters", 422, "no task 'no-such-task'"),
        (dict(content=json.dumps({"images": [nan]}).encode()), "/v1/adapters", 422, "expected finite pixel values; found 256 NaN/Inf"),
        (dict(json={"images": [[[0.5] * 8] * 8]}), "/v1/adapters", 422, "expected shape (N, 16, 16); found (1, 8, 8)"),
        (dict(json={"images": [[[0.5] * 16] * 15 + [[0.5] * 3]]}), "/v1/adapters", 422, "found ragged"),
        (dict(files={"images": ("x.safetensors", b"not safetensors")}), "/v1/adapters", 422, "expected a safetensors file"),
        (dict(json={"adapter_id": "nope", "images": [img]}), "/v1/predict", 404, "found unknown id 'nope'"),
        (dict(json={"adapter_id": good_id, "images": [img], "condition": {"task": task}}), "/v1/predict", 422, "found both"),
        (dict(json={"adapter_id": good_id, "texts": ["hello"]}), "/v1/predict", 422, "expected images for a digits-domains"),
        (dict(json={"adapter_id": good_id, "images": []}), "/v1/predict", 422, "expected 1 … 64 inputs; found 0"),
        (dict(json={"adapter_id": good_id, "images": [img] * 65}), "/v1/predict", 413, "expected at most 64 inputs; found 65"),
        (dict(content=json.dumps({"adapter_id": good_id, "images": [nan]}).encode()), "/v1/predict", 422, "expected finite"),
        (dict(json={"adapter_id": good_id, "images": "abc"}), "/v1/predict", 422, "images: expected a valid list"),
        (dict(content=b"x" * (9 * 2**20)), "/v1/predict", 413, "expected a body of at most 8388608 bytes"),
    ]
    for kwargs, path, status, message in cases:
        r = client.post(path, **kwargs)
        assert r.status_code == status and message in r.json()["detail"], (path, kwargs.get("json"), r.status_code, r.text)
    assert client.get("/v1/adapters/nope").status_code == 404
    # nothing of it took the server down or broke it
    ok = client.post("/v1/predict", json={"adapter_id": good_id, "images": [img]})
    assert ok.status_code == 200 and httpx.get(server.url + "/healthz").status_code == 200
    text = client.get("/metrics").text
    assert [line for line in text.splitlines() if 'status="5' in line and "/readyz" not in line] == []  # 503 while loading only


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(client, server, digits, local):
    """24 concurrent predicts over 8 adapters, interleaved with bad requests: every good one equals its adapter's local
    merged evaluation, every bad one gets its 422, and requests shared forward passes."""
    tasks = [t.name for t in digits.tasks()]
    conds = [digits.condition(tasks[i % len(tasks)], draw=i).images for i in range(8)]
    ids = [client.post("/v1/adapters", json={"images": c.tolist()}).json()["ids"][0] for c in conds]
    before = client.get("/metrics").text
    jobs = []
    for j in range(24):
        k = j % 8
        x = digits.data(tasks[(j * 3) % len(tasks)], "test").x[j % 5 : j % 5 + 1 + j % 4]
        jobs.append((k, x, expected_probs(local, conds[k], x)[0]))

    async def fire():
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as c:
            good = [c.post("/v1/predict", json={"adapter_id": ids[k], "images": x.tolist()}) for k, x, _ in jobs]
            bad = [c.post("/v1/predict", content=json.dumps({"adapter_id": ids[0], "images": [[[float("nan")] * 16] * 16]}))
                   for _ in range(6)]
            return await asyncio.gather(*good), await asyncio.gather(*bad)

    good, bad = asyncio.run(fire())
    for (k, x, want), r in zip(jobs, good):
        assert r.status_code == 200, r.text
        assert torch.allclose(torch.tensor(r.json()["probabilities"]), want, atol=1e-5)
    assert all(r.status_code == 422 for r in bad)
    assert max(r.json()["batch_size"] for r in good) > 4  # some requests shared one forward pass

    def batches(text):
        lines = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("loragen_batch_requests_")}
        return lines["loragen_batch_requests_count"], lines["loragen_batch_requests_sum"]

    (c0, s0), (c1, s1) = batches(before), batches(client.get("/metrics").text)
    assert s1 - s0 == 24 and c1 - c0 < 24


# ---- in process: the micro-batcher and the cache ---------------------------------------------------------------
def _batcher(run, **kw):
    from concurrent.futures import ThreadPoolExecutor

    args = dict(max_batch=8, max_wait_s=0.05, queue_size=16) | kw
    return MicroBatcher(run, ThreadPoolExecutor(1), **args)


def test_batcher_groups_requests_and_isolates_a_failing_one():
    calls = []

    def run(jobs):
        calls.append(len(jobs))
        if any(bool((j.x < 0).any()) for j in jobs):
            raise RuntimeError("a bad input")
        return [j.x * 2 for j in jobs]

    async def main():
        b = _batcher(run, max_batch=16)
        await b.start()
        xs = [torch.full((2,), float(i)) for i in range(4)] + [torch.tensor([-1.0])]
        out = await asyncio.gather(*(b.submit(str(i), None, x) for i, x in enumerate(xs)), return_exceptions=True)
        await b.stop()
        return xs, out

    xs, out = asyncio.run(main())
    for x, o in zip(xs[:4], out[:4]):
        assert torch.equal(o[0], x * 2)
    assert isinstance(out[4], RuntimeError)
    assert calls[0] == 5 and sorted(calls[1:]) == [1] * 5  # one group of all, then each alone after it failed


def test_batcher_answers_429_when_its_queue_is_full():
    gate = threading.Event()

    def run(jobs):
        gate.wait(10)
        return [j.x for j in jobs]

    async def main():
        b = _batcher(run, max_batch=1, queue_size=2)
        await b.start()
        tasks = [asyncio.create_task(b.submit(str(i), None, torch.ones(1))) for i in range(6)]
        await asyncio.sleep(0.2)
        gate.set()
        out = await asyncio.gather(*tasks, return_exceptions=True)
        await b.stop()
        return out

    out = asyncio.run(main())
    refused = [o for o in out if isinstance(o, RequestError)]
    assert refused and all(e.status == 429 and "found the queue full" in str(e) for e in refused)
    assert sum(isinstance(o, tuple) for o in out) >= 2  # the queue's two (and the one running, if it was taken first)


def test_adapter_cache_is_a_bounded_lru(random_adapter):
    cache = AdapterCache(capacity=4)
    ids = {k: cache.put(k, [random_adapter] * 2) for k in ("a", "b")}
    assert cache.get("a") == ids["a"] and len(cache) == 4
    cache.put("c", [random_adapter] * 2)  # evicts b, the least recently used
    assert cache.get("b") is None and cache.adapter(ids["b"][0]) is None and cache.adapter(ids["a"][1]) is random_adapter
    for i in range(100):
        cache.put(f"k{i}", [random_adapter])
    assert len(cache) == 4


# ---- text-topics: adapters that carry the classification head whole -----------------------------------------------
def test_text_generator_predictions_carry_their_heads(tiny_bert_folder, tmp_path):
    suite = get_suite("text-topics", model_path=tiny_bert_folder)
    tasks = [t.name for t in suite.seen_tasks()][:3]
    cfg = HyperConfig(encoder="examples", rank=2, lora_alpha=4.0, k_exemplars=8, steps=4, width=32, cond_dim=16, module_dim=8,
                      tasks_per_step=2, examples_per_task=4, checkpoint_every=20)
    HyperGenerator.fit(cfg, suite=suite, tasks=tasks, out=tmp_path / "gen", show=False)
    gen = load_generator(tmp_path / "gen", suite=suite)
    base = suite.base_model()
    conds = [{"description": "Is it about food?", "examples": [{"text": "I love pizza", "label": "yes"},
                                                                {"text": "the train is late", "label": "no"}]},
             {"description": "Is it about trains?", "examples": [{"text": "the train is late", "label": "yes"},
                                                                  {"text": "a bowl of soup", "label": "no"}]}]
    texts = ["a plate of pasta", "the bus is delayed", "hello there"]
    s = ServerProcess(tmp_path / "gen", tmp_path / "server.log", "--threads", "1", env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            assert c.get("/v1/info").json()["labels"] == ["no", "yes"]

            async def fire():
                async with httpx.AsyncClient(base_url=s.url, timeout=60) as ac:
                    return await asyncio.gather(*(ac.post("/v1/predict", json={"condition": cond, "texts": texts}) for cond in conds))

            answers = asyncio.run(fire())
            bad = c.post("/v1/predict", json={"condition": conds[0], "images": [[[0.0]]]})
            assert bad.status_code == 422 and "expected texts for a text-topics generator" in bad.json()["detail"]
            assert c.post("/v1/predict", json={"condition": conds[0], "texts": ["x" * 2001]}).status_code == 413
    finally:
        s.stop()
    from loragen.conditions import Condition

    x = suite.encode_texts(texts)
    for cond, r in zip(conds, answers):
        assert r.status_code == 200, r.text
        adapter = gen.generate(Condition(task="custom", text=cond["description"],
                                         examples=[f"{e['text']!r} -> {e['label']}" for e in cond["examples"]]))[0]
        assert adapter.layout.full  # the head travels whole in every adapter
        with merged(base, adapter), torch.no_grad():
            want = torch.softmax(suite.forward(base, x), -1)
        assert torch.allclose(torch.tensor(r.json()["probabilities"]), want, atol=1e-5)
        assert r.json()["labels"] == [["no", "yes"][p] for p in want.argmax(-1).tolist()]


# ---- llm-tasks: a causal LM replies, each prompt under its own request's adapter -----------------------------------
def test_causal_lm_generator_replies_under_per_sample_adapters(tiny_llm_folder, tmp_path):
    from loragen.conditions import Condition
    from loragen.suites.completion import greedy_complete
    from loragen.suites.defaults import suite_defaults

    suite = get_suite("llm-tasks", model_path=str(tiny_llm_folder), top_layers=1, answer_tokens=24, max_tokens=128,
                      n_train=24, n_val=12, n_test=12)
    cfg = HyperConfig(**suite_defaults("llm-tasks", quick=True).hyper | {"steps": 4, "cond_draws": 2})
    HyperGenerator.fit(cfg, suite=suite, tasks=["add-2", "format-uppercase"], out=tmp_path / "gen", show=False)
    conds = [{"description": "Add two to the number.", "examples": [{"text": "3", "label": "5"}, {"text": "10", "label": "12"}]},
             {"description": "Write the word in capitals.", "examples": [{"text": "cat", "label": "CAT"}]}]
    prompts = [["7", "41"], ["dog", "a red bird", "sun"]]
    s = ServerProcess(tmp_path / "gen", tmp_path / "server.log", "--threads", "1", "--max-wait-ms", "1000",
                      env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        with httpx.Client(base_url=s.url, timeout=120) as c:
            assert c.get("/v1/info").json()["inputs"] == "prompts"

            async def fire():
                async with httpx.AsyncClient(base_url=s.url, timeout=120) as ac:
                    return await asyncio.gather(*(ac.post("/v1/predict", json={"condition": cond, "texts": texts})
                                                  for cond, texts in zip(conds, prompts)))

            answers = asyncio.run(fire())
            bad = c.post("/v1/predict", json={"condition": conds[0], "images": [[[0.0]]]})
            assert bad.status_code == 422 and "expected texts for a llm-tasks generator" in bad.json()["detail"]
    finally:
        s.stop()
    gen, base = load_generator(tmp_path / "gen", suite=suite), suite.base_model()
    assert any(r.json()["batch_size"] == 5 for r in answers)  # both requests in one generation batch
    for cond, texts, r in zip(conds, prompts, answers):
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] is None and len(r.json()["completions"]) == len(texts)
        adapter = gen.generate(Condition(task="custom", text=cond["description"],
                                         examples=[f"{e['text']!r} -> {e['label']}" for e in cond["examples"]]))[0]
        with merged(base, adapter):
            want = greedy_complete(base, suite.tokenizer(), [[{"role": "user", "content": t}] for t in texts],
                                   suite.answer_tokens)
        assert r.json()["completions"] == want


def test_a_micro_batch_of_prompts_generates_each_under_its_own_adapter(tiny_llm_folder, tmp_path):
    """The service's batched generation (requests of different prompt lengths, re-padded into one batch, per-sample
    LoRA through the KV-cached decoding) replies exactly as each request's adapter merged alone; random adapters
    large enough that the replies differ between adapters."""
    from types import SimpleNamespace

    from loragen.adapters.layout import LoraLayout
    from loragen.serve.batcher import Job
    from loragen.serve.inputs import InputCodec
    from loragen.serve.service import Service

    suite = get_suite("llm-tasks", model_path=str(tiny_llm_folder), top_layers=1, answer_tokens=12)
    base = suite.base_model()
    layout = LoraLayout.from_model(base, suite.target_modules, 4, 8.0)
    g = torch.Generator().manual_seed(0)
    adapters = [Adapter.from_vector(layout, 2.0 * torch.randn(layout.numel, generator=g)) for _ in range(3)]
    svc = Service(ServeConfig(generator=tmp_path))
    svc.suite, svc.base, svc.gen, svc.codec = suite, base, SimpleNamespace(layout=layout), InputCodec(suite)
    prompts = [["What is 2 + 2?", "Spell CAT"], ["a much longer prompt about a red bird in the sun"], ["hi", "7", "41"]]
    jobs = [Job(f"a{i}", a, svc.codec.batch(t, None, 8, 2000), None) for i, (a, t) in enumerate(zip(adapters, prompts))]
    assert len({max(map(len, j.x)) for j in jobs}) == 3  # three prompt widths, padded into one batch
    batched, alone = svc._run_batched(jobs), svc._run_merged(jobs)
    assert batched == alone
    assert [len(r) for r in batched] == [2, 1, 3] and any(reply for r in batched for reply in r)
    with merged(base, adapters[1]):  # another adapter on the same prompts replies otherwise
        assert svc._infer(svc.codec.collate([jobs[0].x])) != batched[0]


def test_a_micro_batch_of_texts_runs_in_length_sorted_chunks_and_answers_in_order(tiny_bert_folder, tmp_path, monkeypatch):
    """Requests of texts of different lengths, each padded to its own longest, re-padded into one batch, sorted by
    length into chunks of TEXT_CHUNK texts trimmed to their longest: every request's logits are those of its adapter
    merged alone."""
    from types import SimpleNamespace

    from loragen.adapters.layout import LoraLayout
    from loragen.serve import inputs
    from loragen.serve.batcher import Job
    from loragen.serve.inputs import InputCodec
    from loragen.serve.service import Service

    monkeypatch.setattr(inputs, "TEXT_CHUNK", 2)
    suite = get_suite("text-topics", model_path=tiny_bert_folder)
    base = suite.base_model()
    layout = LoraLayout.from_model(base, suite.target_modules, 4, 8.0, suite.modules_to_save)
    g = torch.Generator().manual_seed(0)
    adapters = [Adapter.from_vector(layout, 0.5 * torch.randn(layout.numel, generator=g)) for _ in range(3)]
    svc = Service(ServeConfig(generator=tmp_path))
    svc.suite, svc.base, svc.gen, svc.codec = suite, base, SimpleNamespace(layout=layout), InputCodec(suite)
    texts = [["a very long line of conversation about trains that are late again today", "hi"], ["ok"],
             ["pizza", "the weather is lovely this morning", "we talked about films"]]
    jobs = [Job(f"a{i}", a, svc.codec.batch(t, None, 8, 2000), None) for i, (a, t) in enumerate(zip(adapters, texts))]
    assert len({j.x.shape[-1] for j in jobs}) == 3  # three widths, no request padded beyond its own longest
    chunks = svc.codec.passes(svc.codec.collate([j.x for j in jobs]))
    assert [len(i) for i, _ in chunks] == [2, 2, 2] and chunks[0][1].shape[-1] < chunks[-1][1].shape[-1]
    batched, alone = svc._run_batched(jobs), svc._run_merged(jobs)
    assert [len(o) for o in batched] == [2, 1, 3]
    for b, a in zip(batched, alone):
        assert torch.allclose(b, a, atol=1e-5)
    assert not torch.allclose(batched[0][:1], svc._run_merged([Job("x", adapters[1], jobs[0].x, None)])[0][:1], atol=1e-3)


# ---- the page in a real browser -----------------------------------------------------------------------------------
def test_page_in_headless_chromium(server, digits, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's Chromium is not installed (apt-get install -y chromium); the page test needs it")
    task = urllib.parse.quote(digits.tasks()[0].name, safe="")
    url = f"{server.url.replace('://', f'://loragen:{KEY}@')}/#task={task}"  # the page asks for the key as Basic credentials
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000", "--window-size=1000,1100"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=60).stdout
    assert "a <b>hyper</b> generator for <b>digits-domains</b>" in dom  # it reached the API with the key
    assert 'id="adapter-id"' in dom and 'id="predictions"' in dom  # generated an adapter and predicted with it
    assert dom.count("<td>image ") == 8  # the eight sample digits
    shot = tmp_path / "page.png"
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=60)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
