"""How much a batch saves per token on this machine: the ceiling on what micro-batched serving can gain.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/batch_scaling.py --out runs/bench/batch-scaling [--repeats 7]

Runs the text-topics base model (all-MiniLM-L6-v2, fp32, the model `loragen serve` runs for text) over the same 64
test texts, one thread (as the server runs under load), the ways interleaved: one text at a time; in requests of 4
(in their order, padded to the request's longest: the merge baseline's forward); sorted by length in chunks of 16 and
64, each cut to its longest (the micro-batched server's forward); and an fp32 matrix product of the sizes MiniLM's feed-forward
layers multiply, as the machine's attainable rate. Writes results.json and results.md: real tokens per second and
GFLOP/s per chunk size (21.2 MFLOP per token: 6 layers of 4·384² + 2·384·1536 multiply-adds, attention left out).

Why it matters (issue 11): micro-batching N requests can only beat serving them one at a time by (a) dropping the
per-request overhead (merging the adapter and restoring the weights, the model call) and (b) making each token
cheaper. If (b) is ~1 here, the speedup is bounded by (time per request one at a time) / (its pure forward time).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from loragen import atomic
from loragen.evaluate.cost import interleaved_times
from loragen.suites import get_suite

FLOP_PER_TOKEN = 2 * 6 * (4 * 384 * 384 + 2 * 384 * 1536)  # MiniLM-L6's linear layers, 2 FLOP per multiply-add
WAYS = {"one text at a time": (1, False), "requests of 4 texts": (4, False), "sorted chunks of 16": (16, True),
        "sorted chunks of 64": (64, True)}  # name -> (texts per forward, sorted by length first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds (the median is kept)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    suite = get_suite("text-topics")
    model = suite.base_model().eval()
    texts = [x for t in suite.tasks()[:8] for x in suite.texts(t.name, "test")[0]][:64]
    x = suite.encode_texts(texts, longest=True)  # (64, 2, L)
    tokens = int(x[:, 1].sum())

    def run(chunk: int, by_length: bool):
        xs = x[x[:, 1].sum(1).argsort()] if by_length else x

        def forward_all() -> None:
            with torch.no_grad():
                for i in range(0, len(xs), chunk):
                    part = xs[i : i + chunk]
                    model(part[:, :, : int(part[:, 1].sum(1).max())])  # cut to the chunk's longest, as served
        return forward_all

    a, b = torch.randn(1024, 384), torch.randn(384, 1536)
    fns = {name: run(*way) for name, way in WAYS.items()} | {"gemm": lambda: [a @ b for _ in range(20)]}
    seconds = interleaved_times(fns, repeats=args.repeats)  # medians
    rows = [{"way": name, "tokens_per_s": tokens / seconds[name], "gflop_per_s": tokens * FLOP_PER_TOKEN / seconds[name] / 1e9}
            for name in WAYS]
    gemm = 20 * 2 * 1024 * 384 * 1536 / seconds["gemm"] / 1e9
    r = {"command": "python " + " ".join(sys.argv), "texts": len(texts), "real_tokens": tokens, "threads": 1,
         "rows": rows, "gemm_gflop_per_s": gemm,
         "best_sorted_vs_requests": max(r_["tokens_per_s"] for r_ in rows[2:]) / rows[1]["tokens_per_s"]}
    lines = ["# Per-token cost against batch size (MiniLM, fp32, one thread)", "", f"Command: `{r['command']}`", "",
             f"{len(texts)} text-topics test texts, {tokens} real tokens; medians of {args.repeats} interleaved rounds.", "",
             "| forward passes over | real tokens / s | GFLOP/s |", "|---|---|---|"]
    lines += [f"| {row['way']} | {row['tokens_per_s']:.0f} | {row['gflop_per_s']:.1f} |" for row in rows]
    lines += ["", f"fp32 matrix product 1024×384 · 384×1536, one thread: {gemm:.1f} GFLOP/s.",
              f"Per-token gain of the better sorted chunks over requests of 4: {r['best_sorted_vs_requests']:.2f}× (the "
              "most micro-batching can save in the forward itself).", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(args.out / "results.json", r)
    atomic.write_bytes(args.out / "results.md", "\n".join(lines).encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
