"""Past one machine: zoo collection on Ray workers, zoos at fsspec URLs, generator training on several processes."""

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from loragen.errors import ConfigError, ZooError
from loragen.finetune import FinetuneConfig
from loragen.process_group import ProcessGroup
from loragen.zoo.store import MANIFEST_FILE, Zoo

CFG = FinetuneConfig(steps=20, keep_last=2, save_every=5)


def _suite():
    from loragen.suites import get_suite

    return get_suite("digits-domains", n_tasks=12, n_extrapolation=2)


def _names(suite, n):
    return [t.name for t in suite.seen_tasks()[:n]]


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance (2 CPUs) for the module's Ray tests; collect reuses a session it did not start."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'loragen[ray]' (make test installs it)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# ---- Ray workers -------------------------------------------------------------------------------------------------
def test_ray_collection_is_the_one_process_zoo_bit_for_bit(tmp_path, ray_session):
    """2 Ray workers and this process write the same zoo: tasks in the order given, equal shards and manifest lines."""
    from loragen.zoo.collect import collect
    from loragen.zoo.workers import RayConfig

    suite = _suite()
    names = _names(suite, 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what a Ray task of 1 CPU runs with
    try:
        local, _ = collect(suite, tmp_path / "local", names, CFG, show=False)
    finally:
        torch.set_num_threads(threads)
    zoo, summary = collect(suite, tmp_path / "ray", names, CFG, show=False, ray=RayConfig(workers=2))
    assert summary["collected"] == 4 and summary["failed"] == []
    assert zoo.tasks() == names and Zoo.open(tmp_path / "ray").tasks() == names
    assert zoo.digest() == local.digest()
    for t in names:
        assert (tmp_path / "ray" / zoo.task_entries(t)[0]["shard"]).read_bytes() == \
               (tmp_path / "local" / local.task_entries(t)[0]["shard"]).read_bytes()
    again, summary = collect(suite, tmp_path / "ray", names, CFG, show=False, ray=RayConfig(workers=2))  # a re-run
    assert summary["collected"] == 0 and again.digest() == local.digest()


def test_ray_jobs_come_back_in_order_and_failures_are_reported(ray_session):
    """Jobs finish out of order (the first sleeps) but are yielded in the order given; a raising job fails alone."""
    from loragen.zoo.workers import RayConfig, RayWorkers

    workers = RayWorkers(RayConfig(workers=2, retries=0))
    finished = []
    for o in workers.run(os.system, ["sleep 1", "true", "exit 3"]):  # stdlib jobs: workers import nothing of the test
        finished.append((o.key, o.result, time.perf_counter()))
    assert [(k, r) for k, r, _ in finished] == [("sleep 1", 0), ("true", 0), ("exit 3", 3 << 8)]
    out = list(workers.run(int, ["1", "x", "3", "4"]))
    assert [o.key for o in out] == ["1", "x", "3", "4"]
    assert [o.result for o in out] == [1, None, 3, 4]
    assert out[1].error is not None and "invalid literal" in str(out[1].error)
    workers.close()  # a session the caller started stays up
    assert ray_session.is_initialized()


def test_failed_fine_tunes_are_reported_after_the_others_are_stored(tmp_path, monkeypatch):
    """The shared path (here in one process): a failing task does not stop the others; a re-run retries it only."""
    import loragen.zoo.collect as C

    suite = _suite()
    names = _names(suite, 3)
    real = C.finetune

    def flaky(s, b, layout, t, c):
        if t == names[1]:
            raise RuntimeError("loss is NaN")
        return real(s, b, layout, t, c)

    monkeypatch.setattr(C, "finetune", flaky)
    with pytest.raises(ZooError, match=rf"1 of 3 fine-tunes failed \({re.escape(names[1])}: loss is NaN\).*other 2 tasks"):
        C.collect(suite, tmp_path / "z", names, CFG, show=False)
    assert Zoo.open(tmp_path / "z").tasks() == [names[0], names[2]]
    monkeypatch.setattr(C, "finetune", real)
    zoo, summary = C.collect(suite, tmp_path / "z", names, CFG, show=False)
    assert summary["collected"] == 1 and sorted(zoo.tasks()) == sorted(names)


def test_ray_missing_gives_a_one_line_install_hint(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from loragen.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    r = CliRunner().invoke(app, ["zoo", "collect", "--out", str(tmp_path / "z"), "--quick", "--tasks", "all", "--ray"])
    assert r.exit_code == 2, r.output
    assert "pip install 'loragen[ray]'" in r.output and len(r.output.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="expected workers >= 1"):
        from loragen.zoo.workers import RayConfig

        RayConfig(workers=0)


# ---- fsspec zoo paths --------------------------------------------------------------------------------------------
def test_zoo_at_a_memory_url_collects_resumes_and_repairs(tmp_path):
    """`zoo collect --out memory://...` writes the zoo a local folder gets; a torn manifest is repaired there too."""
    import fsspec
    from typer.testing import CliRunner

    from loragen.cli import app

    url = f"memory://zoo-{uuid.uuid4().hex[:8]}"
    args = ["zoo", "collect", "--quick", "--tasks", "seen", "--steps", "20"]
    r = CliRunner().invoke(app, args + ["--out", url])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "local")])
    assert r.exit_code == 0, r.output
    remote, local = Zoo.open(url), Zoo.open(tmp_path / "local")
    assert remote.tasks() == local.tasks() and len(remote.tasks()) >= 2
    assert remote.digest() == local.digest()
    assert torch.equal(remote.vectors(remote.tasks()[0]), local.vectors(local.tasks()[0]))
    assert "collected now" in CliRunner().invoke(app, args + ["--out", url]).output  # resumed: nothing to do
    fs = fsspec.filesystem("memory")
    manifest = f"{url[len('memory://'):]}/{MANIFEST_FILE}"
    text = fs.cat_file(manifest).decode()
    fs.pipe_file(manifest, text[: len(text) - 40].encode())  # a crash in the middle of the last task's lines
    repaired = Zoo.open(url)
    assert repaired.tasks() == remote.tasks()[:-1]
    assert all(json.loads(x)["task"] in repaired.tasks() for x in fs.cat_file(manifest).decode().splitlines())


def test_backends_without_atomic_writes_are_refused(tmp_path, tiny_layout):
    with pytest.raises(ZooError, match=r"expected a local folder or a URL of .*memory://.*; found ftp://"):
        Zoo.create("ftp://example.org/zoo", tiny_layout)
    zoo = Zoo.create(f"file://{tmp_path}/z", tiny_layout)  # file:// is a local folder
    assert isinstance(zoo.path, Path) and (tmp_path / "z" / MANIFEST_FILE).exists()


# ---- several training processes ----------------------------------------------------------------------------------
def test_process_group_slices_cover_the_global_batch_once():
    batch = torch.arange(8)
    parts = [batch[ProcessGroup(r, 4).local(8)] for r in range(4)]
    assert torch.equal(torch.cat(parts), batch)
    assert ProcessGroup().local(5) == slice(0, 5)
    with pytest.raises(ConfigError, match="expected a multiple of 2, found 5"):
        ProcessGroup(1, 2).local(5)
    g = torch.Generator().manual_seed(0)
    assert ProcessGroup().fork(g) is g
    a, b = (ProcessGroup(r, 2).fork(torch.Generator().manual_seed(0)) for r in (0, 1))
    assert not torch.equal(torch.randn(4, generator=a), torch.randn(4, generator=b))  # no shared noise


def _launch(out: Path, *extra: str) -> subprocess.CompletedProcess:
    """accelerate launch of the tiny hyper fit on 2 CPU processes (gloo)."""
    pytest.importorskip("accelerate")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "loragen.experiments.parity", "--out", str(out), *extra]
    env = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "generator.safetensors"))


def test_two_processes_match_one_and_resume_exactly(tmp_path):
    """2 processes × 2 tasks a step train the weights 1 process × 4 tasks does (a half batch does not); a 2-process
    run killed after its first state save resumes to the uninterrupted run's weights, bit for bit."""
    from loragen.experiments.parity import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(tmp_path / "one")
        fit(tmp_path / "half", tasks_per_step=2)
    finally:
        torch.set_num_threads(threads)
    r = _launch(tmp_path / "two")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "parity.json").read_text())["processes"] == 2
    one, two, half = _weights(tmp_path / "one"), _weights(tmp_path / "two"), _weights(tmp_path / "half")
    gap = max((one[k] - two[k]).abs().max().item() for k in one)
    other = max((one[k] - half[k]).abs().max().item() for k in one)
    assert gap < 1e-4 and other > 100 * gap, (gap, other)
    killed = _launch(tmp_path / "resumed", "--stop-after-save")
    assert killed.returncode != 0 and (tmp_path / "resumed" / "train_state.safetensors").exists()
    assert not (tmp_path / "resumed" / "generator.safetensors").exists()
    r = _launch(tmp_path / "resumed")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "resumed" / "parity.json").read_text())["resumed_at"] == 10
    resumed = _weights(tmp_path / "resumed")
    assert all(torch.equal(resumed[k], two[k]) for k in two)
    assert not (tmp_path / "resumed" / "train_state.safetensors").exists()  # removed once the result was written
