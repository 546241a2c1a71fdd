"""Scale benchmark: zoo collection on 1 vs 2 Ray workers, kill-and-resume trials, 1- vs 2-process generator training.

    python benchmarks/scale.py --out runs/bench/scale            # measurements (needs the machine to itself)
    python benchmarks/scale.py --out runs/scale-quick --quick    # a smoke run (about 2 minutes; numbers mean nothing)

Writes DIR/results.json and DIR/results.md:
- ray_speedup_2_vs_1: seconds of a collection on 1 Ray worker / on 2 (a Ray session started beforehand and excluded,
  as a cluster would be running already; the session start is reported apart), same tasks;
- zoo_identical: the two zoos' digests (zoo.json, manifest lines less timings, shard bytes) are equal;
- kill_trials / kill_trials_identical: `loragen zoo collect --ray` killed at a random moment (the driver with SIGKILL,
  or one Ray worker running a fine-tune), resumed by the same command, and compared with the clean zoo bit for bit;
- ddp_matches: a tiny hyper fit on 2 processes (`accelerate launch`, gloo) reaches the 1-process weights (max abs
  difference under 1e-4); step_s_1 / step_s_2: its seconds per optimiser step.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from loragen import atomic
from loragen.finetune import FinetuneConfig
from loragen.suites import get_suite
from loragen.suites.defaults import suite_defaults
from loragen.zoo.collect import collect
from loragen.zoo.store import MANIFEST_FILE, Zoo
from loragen.zoo.workers import RayConfig

SUITE = "digits-domains"


def settings(quick: bool) -> dict:
    """Tasks, fine-tuning steps, trials and the parity fit's size of a full or quick run."""
    if quick:
        return {"tasks": 4, "steps": 40, "trials": 3, "parity_steps": 20, "parity_tasks": 4}
    # 64 tasks: the demo's zoo (its seen tasks), each fine-tuned with the suite's own 600 steps
    return {"tasks": 64, "steps": 600, "trials": 5, "parity_steps": 60, "parity_tasks": 8}


def _cli(out: Path, names: list[str], s: dict, quick: bool) -> list[str]:
    cmd = [sys.executable, "-m", "loragen.cli", "zoo", "collect", "--out", str(out), "--suite", SUITE,
           "--tasks", ",".join(names), "--steps", str(s["steps"]), "--ray", "--workers", "2", "--retries", "3"]
    return cmd + (["--quick"] if quick else [])


def _env() -> dict:
    return os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _tasks_done(zoo: Path) -> int:
    try:
        return len({json.loads(x)["task"] for x in (zoo / MANIFEST_FILE).read_text().splitlines() if x.strip()})
    except (OSError, json.JSONDecodeError):
        return 0


def _stop_session(proc: subprocess.Popen) -> None:
    """SIGKILL whatever is left of a killed driver's session (its local Ray processes): only what this script started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def ray_part(out: Path, names: list[str], cfg: FinetuneConfig, suite, log) -> dict:
    import ray

    res, digests = {}, {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        res[f"ray_start_s_{workers}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        zoo, summary = collect(suite, out / f"zoo-{workers}w", names, cfg, show=False, ray=RayConfig(workers=workers))
        res[f"collect_s_{workers}"] = time.perf_counter() - t0
        ray.shutdown()
        res[f"finetune_s_mean_{workers}"] = summary["finetune_s_mean"]
        digests[workers] = zoo.digest()
        log(f"{workers} Ray worker(s): {len(names)} tasks in {res[f'collect_s_{workers}']:.1f} s "
            f"(Ray start {res[f'ray_start_s_{workers}']:.1f} s)")
    res["ray_speedup_2_vs_1"] = res["collect_s_1"] / res["collect_s_2"]
    res["zoo_identical"] = digests[1] == digests[2]
    res["tasks_per_hour_2"] = len(names) / res["collect_s_2"] * 3600
    res["estimate_zoo_1000_tasks_h_2_workers"] = 1000 / res["tasks_per_hour_2"]
    res["clean_digest"] = digests[2]
    return res


def kill_trials(out: Path, names: list[str], s: dict, quick: bool, clean: str, window_s: float, log) -> list[dict]:
    """Each trial kills at a random moment of the collection's expected span `window_s` (Ray start + fine-tunes),
    counted from the zoo's creation: the driver (SIGKILL; the same command resumes) or a Ray worker in the middle of a
    fine-tune (Ray reruns it)."""
    rng = random.Random(0)
    trials = []
    for i in range(s["trials"]):
        target = "driver" if i % 2 == 0 else "worker"
        zoo = out / f"kill-{i}"
        cmd = _cli(zoo, names, s, quick)
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        kill_after = rng.uniform(0.05, 0.95) * window_s
        killed, created, t_end = None, None, time.time() + 900
        while proc.poll() is None and time.time() < t_end:
            if created is None and (zoo / MANIFEST_FILE).exists():
                created = time.time()
            if created is not None and time.time() - created >= kill_after:
                if target == "driver":
                    proc.send_signal(signal.SIGKILL)
                    killed = {"pid": proc.pid, "after_s": round(time.time() - created, 2), "tasks_before": _tasks_done(zoo)}
                    break
                running = [p for p in psutil.Process(proc.pid).children(recursive=True)
                           if _title(p).startswith("ray::_call")]
                if running:
                    victim = rng.choice(running)
                    victim.kill()
                    killed = {"pid": victim.pid, "after_s": round(time.time() - created, 2),
                              "tasks_before": _tasks_done(zoo)}
                    break
            time.sleep(0.02)
        if target == "driver":
            proc.wait()
            time.sleep(1.0)
            _stop_session(proc)
            resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
            ok = resumed.returncode == 0
        else:
            ok = proc.wait(timeout=900) == 0
            _stop_session(proc)
        digest = Zoo.open(zoo).digest() if Zoo.exists(zoo) else None
        trial = {"trial": i, "killed": target, "kill": killed, "completed": ok, "identical": digest == clean,
                 "mid_collection": killed is not None and killed["tasks_before"] < len(names)}
        trials.append(trial)
        log(f"trial {i}: killed {target} ({killed}); resumed {'ok' if ok else 'FAILED'}; identical {digest == clean}")
    return trials


def _title(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()) or p.name()
    except psutil.Error:
        return ""


def ddp_part(out: Path, s: dict, log) -> dict:
    from safetensors.torch import load_file

    args = ["-m", "loragen.experiments.parity", "--steps", str(s["parity_steps"]), "--tasks-per-step", str(s["parity_tasks"])]
    one = subprocess.run([sys.executable, *args, "--out", str(out / "ddp-1")], env=_env(), capture_output=True, text=True)
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *args,
                          "--out", str(out / "ddp-2")], env=_env(), capture_output=True, text=True)
    if one.returncode or two.returncode:
        raise SystemExit(f"parity fit failed:\n{one.stderr[-2000:]}\n{two.stderr[-2000:]}")
    a, b = load_file(str(out / "ddp-1" / "generator.safetensors")), load_file(str(out / "ddp-2" / "generator.safetensors"))
    gap = max((a[k] - b[k]).abs().max().item() for k in a)
    r1 = json.loads((out / "ddp-1" / "parity.json").read_text())
    r2 = json.loads((out / "ddp-2" / "parity.json").read_text())
    log(f"accelerate: 2 processes vs 1: max |Δw| {gap:.2e}; step {r1['step_s'] * 1e3:.1f} ms vs {r2['step_s'] * 1e3:.1f} ms")
    return {"ddp_matches": gap < 1e-4, "ddp_max_abs_diff": gap, "step_s_1": r1["step_s"], "step_s_2": r2["step_s"],
            "ddp_processes": r2["processes"]}


def markdown(r: dict) -> str:
    rows = [("Ray: collection, 1 worker (s)", f"{r['collect_s_1']:.1f}"),
            ("Ray: collection, 2 workers (s)", f"{r['collect_s_2']:.1f}"),
            ("ray_speedup_2_vs_1 (target ≥ 1.6)", f"{r['ray_speedup_2_vs_1']:.2f}"),
            ("Ray session start (s)", f"{r['ray_start_s_2']:.1f}"),
            ("zoo_identical (1 vs 2 workers)", str(r["zoo_identical"])),
            ("kill_trials", str(r["kill_trials"])),
            ("kill_trials_identical", str(r["kill_trials_identical"])),
            ("kills that hit before the last task was stored", str(r["kill_trials_mid_collection"])),
            ("ddp_matches (max abs Δw)", f"{r['ddp_matches']} ({r['ddp_max_abs_diff']:.1e})"),
            ("accelerate step, 1 process (ms)", f"{r['step_s_1'] * 1e3:.2f}"),
            ("accelerate step, 2 processes (ms)", f"{r['step_s_2'] * 1e3:.2f}"),
            ("estimate: 1,000-task zoo on 2 workers (h)", f"{r['estimate_zoo_1000_tasks_h_2_workers']:.2f}")]
    head = (f"# Scale benchmark{' (quick: the numbers mean nothing)' if r['quick'] else ''}\n\n"
            f"{r['tasks']} {SUITE} tasks, {r['steps']} fine-tuning steps each, on {os.cpu_count()} CPU cores.\n\n")
    return head + "| measure | value |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="a smoke run of every part (numbers mean nothing)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if (args.out / "results.json").exists() or (args.out / "zoo-1w").exists():
        raise SystemExit(f"{args.out} holds an earlier run; expected a new folder")
    args.out.mkdir(parents=True, exist_ok=True)
    s = settings(args.quick)
    defaults = suite_defaults(SUITE, args.quick)
    suite = get_suite(SUITE, **(defaults.suite_kwargs if args.quick else {}))
    names = [t.name for t in suite.seen_tasks()[: s["tasks"]]]
    cfg = FinetuneConfig(**defaults.finetune | {"steps": s["steps"]})  # what `zoo collect --steps` builds
    suite.base_model()  # built (and cached) once, before any timing
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {msg}", flush=True)

    r = {"quick": args.quick, "suite": SUITE, "tasks": len(names), "steps": s["steps"], "cpu_cores": os.cpu_count()}
    r |= ray_part(args.out, names, cfg, suite, log)
    trials = kill_trials(args.out, names, s, args.quick, r["clean_digest"], r["ray_start_s_2"] + r["collect_s_2"], log)
    r |= {"kill_trials": len(trials), "kill_trials_identical": sum(t["identical"] and t["completed"] for t in trials),
          "kill_trials_mid_collection": sum(t["mid_collection"] for t in trials), "trials": trials}
    r |= ddp_part(args.out, s, log)
    r["wall_s"] = time.perf_counter() - t0
    atomic.write_json(args.out / "results.json", r)
    atomic.write_bytes(args.out / "results.md", markdown(r).encode())
    print(markdown(r))


if __name__ == "__main__":
    main()
