"""Load on `loragen serve`: N concurrent clients, each with its own condition, against one server on loopback.

    .venv/bin/python benchmarks/serve_load.py --out runs/bench/serve-load [--quick] [--generator DIR]

Phases, each bounded in requests and time: (1) every client generates its adapter (cold: condition encoding included,
timed at the client); (2) the clients send predict requests with 4 inputs each, one request in 20 a bad one (NaN) that
must get a 422, and every answer is checked against a local merged() evaluation of the client's adapter; the server's
resident memory is read after `--rss-at` requests (1,000 and 10,000), while every client keeps asking for adapters with
fresh seeds so the adapter cache turns over; (3) the same load against a second server in `--mode merge` (one request
at a time, its adapter merged into the weights and restored): the baseline throughput.
Writes results.json ({"clients", "throughput_rps", "baseline_throughput_rps", "speedup", "p50_ms", "p99_ms",
"mean_batch", "http_5xx", "wrong_answers", "rss_mb_1k", "rss_mb_10k", "generate_cold_ms", ...}) and results.md.
Without --generator a tiny digits-domains hyper generator is fitted into --out first (seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from loragen import atomic


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """`loragen serve` in a subprocess on a free loopback port."""

    def __init__(self, generator: Path, log: Path, *args: str):
        import httpx

        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-c", "from loragen.cli import app; app()", "serve", "--generator",
                                      str(generator), "--port", self.url.rsplit(":", 1)[1], *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the server did not come up; see {log}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def fit_tiny_generator(out: Path) -> Path:
    from loragen.generators.hyper import HyperConfig, HyperGenerator
    from loragen.suites import get_suite

    if not (out / "generator.json").exists():
        suite = get_suite("digits-domains", n_tasks=12, n_extrapolation=2)
        HyperGenerator.fit(HyperConfig(steps=60, width=64, cond_dim=32, module_dim=8, tasks_per_step=4, examples_per_task=16),
                           suite=suite, out=out, show=False)
    return out


async def run_load(url: str, clients: list[dict], total: int, budget_s: float, rss_at: tuple[int, ...], pid: int,
                   churn_every: int) -> dict:
    """`total` predict requests from len(clients) concurrent clients (or as many as fit in budget_s)."""
    import httpx

    lat, stats = [], {"http_5xx": 0, "wrong_answers": 0, "bad_rejected": 0, "bad_accepted": 0, "http_429": 0, "batch": [],
                      "churn_adapters": 0, "other_4xx": 0}
    rss, sent = {}, 0
    t_end = time.perf_counter() + budget_s
    bad_body = json.dumps({"adapter_id": clients[0]["id"], "images": [[[float("nan")] * 16] * 16]})

    async def client(c: dict, http: httpx.AsyncClient):
        nonlocal sent
        while sent < total and time.perf_counter() < t_end:
            sent += 1
            n = sent
            if n in rss_at:
                rss[n] = rss_mb(pid)
            if n % 20 == 0:  # a bad request: must be refused with a 4xx, never a 5xx
                r = await http.post("/v1/predict", content=bad_body)
                stats["http_5xx"] += r.status_code >= 500
                stats["bad_rejected" if r.status_code == 422 else "bad_accepted"] += 1
                continue
            if churn_every and n % churn_every == 0:  # a fresh adapter: the cache turns over
                r = await http.post("/v1/adapters", json={"images": c["images"], "seed": n})
                stats["http_5xx"] += r.status_code >= 500
                stats["churn_adapters"] += r.status_code == 200
            t0 = time.perf_counter()
            r = await http.post("/v1/predict", json={"adapter_id": c["id"], "images": c["x"]})
            lat.append(1000 * (time.perf_counter() - t0))
            if r.status_code >= 500:
                stats["http_5xx"] += 1
            elif r.status_code == 429:
                stats["http_429"] += 1
            elif r.status_code != 200:
                stats["other_4xx"] += 1
            else:
                body = r.json()
                stats["wrong_answers"] += body["predictions"] != c["want"]
                stats["batch"].append(body["batch_size"])

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=len(clients), max_keepalive_connections=len(clients))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(c, http) for c in clients))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"requests": len(lat), "wall_s": wall, "throughput_rps": len(lat) / wall,
            "p50_ms": lat[len(lat) // 2] if lat else None, "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
            "mean_batch": statistics.fmean(stats.pop("batch") or [0]), "rss": rss, **stats}


async def make_adapters(url: str, conditions: list) -> tuple[list[str], list[float], list[float]]:
    """One adapter per client, all requested at once: ids, client-side and server-side generate times (ms)."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        async def one(images):
            t0 = time.perf_counter()
            r = await http.post("/v1/adapters", json={"images": images})
            r.raise_for_status()
            return r.json()["ids"][0], 1000 * (time.perf_counter() - t0), r.json()["generate_ms"]

        cold = [await one(c) for c in conditions[:3]]  # lone requests first: nothing queued in front of them
        cold += await asyncio.gather(*(one(c) for c in conditions[3:]))
    return [c[0] for c in cold], [c[1] for c in cold], [c[2] for c in cold]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="a bounded smoke run (under 2 minutes on 2 cores)")
    ap.add_argument("--generator", type=Path, help="a trained digits-domains generator (default: fit a tiny one)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    args = ap.parse_args()
    clients_n = 8 if args.quick else args.clients
    rss_at = (300, 1200) if args.quick else (1000, 10000)
    baseline_requests = 300 if args.quick else 2000
    budget_s = 40 if args.quick else 900
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    from loragen.adapters.apply import merged
    from loragen.conditions import Condition
    from loragen.generators import load_generator
    from loragen.suites import get_suite

    gen_dir = args.generator or fit_tiny_generator(args.out / "generator")
    suite = get_suite("digits-domains")
    tasks = [t.name for t in suite.tasks()]
    gen, base = load_generator(gen_dir), suite.base_model()
    clients = []
    for i in range(clients_n):
        task = tasks[i % len(tasks)]
        images = suite.condition(task, draw=i).images
        x = suite.data(task, "test").x[4 * i % 40 : 4 * i % 40 + 4]  # 4 inputs per request
        with merged(base, gen.generate(Condition(task="custom", images=images))[0]), torch.no_grad():
            want = base(x).argmax(-1).tolist()
        clients.append({"images": images.tolist(), "x": x.tolist(), "want": want})

    results = {"clients": clients_n, "quick": args.quick, "generator": str(gen_dir), "inputs_per_request": 4,
               "server_threads": args.threads, "cpu_count": os.cpu_count()}
    common = ["--threads", str(args.threads), "--cache-adapters", "256", "--queue-size", "1024"]
    server = Server(gen_dir, args.out / "server-batched.log", *common, "--max-batch", "128", "--max-wait-ms", "5")
    try:
        ids, client_ms, server_ms = asyncio.run(make_adapters(server.url, [c["images"] for c in clients]))
        for c, i in zip(clients, ids):
            c["id"] = i
        results["generate_first_ms"] = round(client_ms[0], 2)  # the server's first request, at the client
        results["generate_cold_ms"] = round(statistics.median(client_ms[1:3]), 2)  # a lone new condition, at the client (HTTP included)
        results["generate_cold_server_ms"] = round(statistics.median(server_ms), 2)  # in the server, per request
        results["rss_mb_start"] = round(rss_mb(server.proc.pid), 1)
        load = asyncio.run(run_load(server.url, clients, rss_at[-1], budget_s, rss_at, server.proc.pid, churn_every=50))
        results["rss_mb_end"] = round(rss_mb(server.proc.pid), 1)
    finally:
        server.stop()
    rss = load.pop("rss")
    results |= {k: (round(v, 2) if isinstance(v, float) else v) for k, v in load.items()}
    results["rss_at_requests"] = list(rss_at)
    results["rss_mb_1k"], results["rss_mb_10k"] = (round(rss[k], 1) if k in rss else None for k in rss_at)

    server = Server(gen_dir, args.out / "server-merge.log", *common, "--mode", "merge")
    try:
        asyncio.run(make_adapters(server.url, [c["images"] for c in clients]))  # same conditions: same ids
        base_load = asyncio.run(run_load(server.url, clients, baseline_requests, budget_s / 2, (), server.proc.pid, 0))
    finally:
        server.stop()
    results["baseline_throughput_rps"] = round(base_load["throughput_rps"], 2)
    results["baseline_p50_ms"], results["baseline_p99_ms"] = round(base_load["p50_ms"], 2), round(base_load["p99_ms"], 2)
    results["http_5xx"] += base_load["http_5xx"]
    results["wrong_answers"] += base_load["wrong_answers"]
    results["speedup"] = round(results["throughput_rps"] / results["baseline_throughput_rps"], 2)
    growth = None if None in (results["rss_mb_1k"], results["rss_mb_10k"]) else results["rss_mb_10k"] / results["rss_mb_1k"] - 1
    results["rss_growth"] = None if growth is None else round(growth, 4)
    atomic.write_json(args.out / "results.json", results)
    rows = [("clients (distinct adapters)", results["clients"]), ("predict requests (4 inputs each)", results["requests"]),
            ("throughput, micro-batched (req/s)", results["throughput_rps"]),
            ("throughput, merge one at a time (req/s)", results["baseline_throughput_rps"]), ("speedup", results["speedup"]),
            ("p50 / p99 latency, batched (ms)", f"{results['p50_ms']} / {results['p99_ms']}"),
            ("p50 / p99 latency, merge (ms)", f"{results['baseline_p50_ms']} / {results['baseline_p99_ms']}"),
            ("mean micro-batch (samples)", results["mean_batch"]),
            ("generate a new condition, at the client / in the server (ms)", f"{results['generate_cold_ms']} / {results['generate_cold_server_ms']}"),
            ("the server's first request (ms)", results["generate_first_ms"]),
            ("HTTP 5xx", results["http_5xx"]), ("wrong answers", results["wrong_answers"]),
            ("bad requests refused (422) / accepted", f"{results['bad_rejected']} / {results['bad_accepted']}"),
            ("429 (queue full)", results["http_429"]),
            (f"RSS after {rss_at[0]} / {rss_at[1]} requests (MB)", f"{results['rss_mb_1k']} / {results['rss_mb_10k']}"),
            ("adapters generated during the run (cache churn)", results["churn_adapters"])]
    md = ["# loragen serve under load" + (" (quick)" if args.quick else ""), "",
          f"digits-domains hyper generator `{gen_dir}`; server torch threads {args.threads}; {os.cpu_count()} CPU cores; "
          "loopback, client and server on one machine.", "", "| measure | value |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in rows]
    atomic.write_bytes(args.out / "results.md", ("\n".join(md) + "\n").encode())
    print("\n".join(md))


if __name__ == "__main__":
    main()
