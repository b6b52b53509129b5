"""sd-generate on Dask: a LocalCluster of 2 worker processes gives what one process gives, survives a killed
worker without making any image twice, and bad clusters are one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import helpers.sd_generate
import pytest
from helpers import fails_with
from helpers.cnn_hooks import SMALL, assert_same_stores, make_tree
from helpers.sd_generate import FAST, failing_pipeline, make_records, read_rows

from synthprobe.common.files import InputError
from synthprobe.formats.image_cache import ImageCache
from synthprobe.formats.prompts import PromptRecord, write_jsonl
from synthprobe.sd_generate.pipeline import load_pipeline
from synthprobe.sd_generate.run import run_generation
from synthprobe.tiny_models import tiny_sd3_settings
from synthprobe.tools import cnn_hooks, sd_generate

# instrument_worker runs on the workers, which cannot import this test module: send it by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(helpers.sd_generate)


def instrument_worker(log_path: str) -> None:
    """On each worker process (a worker plugin, so a restarted worker too): the real loader and cache, logging
    each pipeline build and each image stored; 'nan' prompts give NaN pixels and 'boom' prompts raise."""
    import functools

    from synthprobe.formats.image_cache import ImageCache
    from synthprobe.sd_generate import pipeline as pipeline_module

    def log_event(line: str) -> None:
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    store, load = ImageCache.store, pipeline_module.load_pipeline

    def counted_store(cache, key, png, fields):
        entry = store(cache, key, png, fields)
        log_event(f"store {key}")
        return entry

    @functools.wraps(load)
    def counted_load(settings):
        pipeline = failing_pipeline(load(settings))
        log_event(f"build {os.getpid()}")
        return pipeline

    ImageCache.store = counted_store
    pipeline_module.load_pipeline = counted_load


def events(path: Path, kind: str) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [line.split(" ", 1)[1] for line in lines if line.startswith(kind + " ")]


@pytest.fixture(scope="module")
def event_log(tmp_path_factory):
    return tmp_path_factory.mktemp("events") / "events.log"


@pytest.fixture(scope="module")
def engine(event_log):
    """One LocalCluster of 2 worker processes for the module, its workers instrumented."""
    from distributed.diagnostics.plugin import WorkerPlugin

    from synthprobe.common.cluster import DaskEngine

    class Instrument(WorkerPlugin):
        name = "test-instrument"

        def setup(self, worker):
            instrument_worker(str(event_log))

    engine = DaskEngine("local:2")
    engine.client.register_plugin(Instrument())
    engine.client.wait_for_workers(2)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def single_process(tiny_model, tmp_path_factory):
    """A single-process run of the same records, through a pipeline loaded once by the real loader."""
    pipeline = load_pipeline(tiny_sd3_settings(tiny_model, ImageCache(tmp_path_factory.mktemp("loader-cache"))))

    def run(records, tmp_path):
        cache = ImageCache(tmp_path / "single-cache")
        out = tmp_path / "single"
        settings = tiny_sd3_settings(tiny_model, cache)
        result = run_generation(records, settings, cache, out, build_pipeline=lambda s: pipeline, silent=True)
        write_jsonl(out / "images.jsonl", result.rows)
        return out

    return run


def assert_same_folder(out: Path, expected: Path) -> None:
    assert (out / "images.jsonl").read_bytes() == (expected / "images.jsonl").read_bytes()
    for row in read_rows(expected / "images.jsonl"):
        if row["status"] == "ok":
            assert (out / row["path"]).read_bytes() == (expected / row["path"]).read_bytes(), row["id"]


def test_the_tool_starts_and_closes_its_own_local_cluster(tmp_path, cli):
    """--dask local:N with no client running yet (so first in this module, before the shared cluster starts): the
    tool starts the cluster, runs on it and closes it."""
    images = make_tree(tmp_path / "images", per_synset=2)
    args = [images, *SMALL, "--precision", "fp32", "--layers", "layer4"]
    cli(cnn_hooks.main, *args, "--out", tmp_path / "reference.zarr")
    cli(cnn_hooks.main, *args, "--out", tmp_path / "local.zarr", "--dask", "local:1")
    assert_same_stores(tmp_path / "local.zarr", tmp_path / "reference.zarr")


def test_the_tool_on_a_cluster_matches_one_process(engine, single_process, tiny_model, tmp_path, cli):
    records = make_records(10)
    records.append(PromptRecord(**{**records[0].__dict__, "id": "twin"}))  # a shared key, made once
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [r.to_json() for r in records])
    cache = tmp_path / "cache"
    address = engine.cluster.scheduler_address  # the tool connects to the running local:2 cluster by its address
    cli(
        sd_generate.main,
        prompts,
        "--out",
        tmp_path / "out",
        "--model",
        tiny_model,
        "--cache",
        cache,
        "--dask",
        address,
        *FAST,
    )
    assert_same_folder(tmp_path / "out", single_process(records, tmp_path))
    assert json.loads((tmp_path / "out" / "run.json").read_text())["config"]["dask"] == address
    assert len(list(cache.glob("*/*.png"))) == 10


@pytest.mark.slow  # the killed worker's successor imports torch and diffusers again
def test_a_worker_killed_mid_run_costs_nothing_twice(
    engine, event_log, single_process, tiny_model, tmp_path, monkeypatch
):
    monkeypatch.setattr("synthprobe.sd_generate.run.TASK_RECORDS", 3)
    records = make_records(24)
    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(tiny_model, cache)
    killed = {}
    stores_before = len(events(event_log, "store"))

    def kill_a_busy_worker():
        deadline = time.monotonic() + 60
        while not any(cache.root.glob("*/*.json")) and time.monotonic() < deadline:
            time.sleep(0.005)
        busy = [address for address, keys in engine.client.processing().items() if keys]
        pids = engine.client.run(os.getpid, workers=busy[:1])
        killed.update(pids)
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    result = run_generation(records, settings, cache, tmp_path / "out", silent=True, engine=engine)
    killer.join()
    write_jsonl(tmp_path / "out" / "images.jsonl", result.rows)

    assert killed, "no worker was busy when the first image landed"
    assert (result.generated, result.failed) == (24, 0)
    stored = events(event_log, "store")[stores_before:]
    assert sorted(stored) == sorted({r["cache_key"] for r in result.rows}), "each image stored exactly once"
    assert_same_folder(tmp_path / "out", single_process(records, tmp_path))


def test_each_worker_loads_its_pipeline_once_and_failures_are_rows(engine, event_log, tiny_model, tmp_path):
    records = make_records(8)
    records[2] = PromptRecord(**{**records[2].__dict__, "prompt": "nan"})
    records[5] = PromptRecord(**{**records[5].__dict__, "prompt": "boom"})
    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(tiny_model, cache)
    result = run_generation(records, settings, cache, tmp_path / "out", engine=engine)
    assert [r["status"] for r in result.rows] == ["ok", "ok", "failed", "ok", "ok", "failed", "ok", "ok"]
    assert "out of memory" in result.rows[5]["error"] and "NaN" in result.rows[2]["error"]
    assert not (tmp_path / "out" / f"{records[2].id}.png").exists()
    # Another run with the same settings reuses each worker's pipeline.
    more = make_records(6, start=8)
    result = run_generation(more, settings, cache, tmp_path / "out", engine=engine)
    assert result.generated == 6
    builds = events(event_log, "build")  # the killed worker's successor has a pid of its own
    assert builds and len(set(builds)) == len(builds), "a worker process built the pipeline twice"
    models = engine.client.run(lambda: len(sys.modules["synthprobe.common.cluster"]._worker_models))
    assert set(models.values()) <= {0, 1}, "a worker holds one pipeline at most"


def test_a_worker_without_the_model_files_is_one_line_and_the_cache_stays_empty(engine, tiny_model, tmp_path):
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    cache = ImageCache(tmp_path / "cache")
    settings = tiny_sd3_settings(model, cache)  # the client reads the configs; then the folder goes
    shutil.rmtree(model)
    with pytest.raises(InputError, match=f"model folder {model} does not exist") as error:
        run_generation(make_records(4), settings, cache, tmp_path / "out", silent=True, engine=engine)
    assert "\n" not in str(error.value)
    assert not list(cache.root.glob("*/*"))


def slow_square(value: int) -> int:
    time.sleep(0.02)
    return value * value


def test_a_window_of_tasks_is_in_flight_and_results_are_released(engine, monkeypatch):
    monkeypatch.setattr(engine, "_window", lambda: 3)
    in_flight = []
    results = {}
    for index, result in engine.run_tasks(
        slow_square, [(v,) for v in range(20)], [1] * 20, desc="squares", unit="task", silent=True
    ):
        in_flight.append(sum(key.startswith("squares-") for key in engine.client.futures))
        results[index] = result
    assert results == {v: v * v for v in range(20)}
    # the window, plus the finished one that as_completed lets go of at its next step
    assert max(in_flight) <= 3 + 1
    assert sum(key.startswith("squares-") for key in engine.client.futures) == 0


def failing_task() -> None:
    raise ModuleNotFoundError("No module named 'diffusers'")


def test_a_task_that_fails_on_a_worker_is_one_line(engine):
    with pytest.raises(InputError, match=r"task 0 failed \(ModuleNotFoundError: No module named 'diffusers'\)"):
        list(engine.run_tasks(failing_task, [()], [1], desc="failing", unit="task", silent=True))


@pytest.mark.parametrize(
    "value, exit_code, expected",
    [
        ("127.0.0.1:1", 1, "Error: --dask 127.0.0.1:1: cannot reach the Dask scheduler"),
        ("local:0", 2, "Error: Invalid value for '--dask': local:0: a local cluster needs at least one worker"),
        ("no such host", 2, "Error: Invalid value for '--dask': 'no such host': expected local:N, a scheduler address"),
        ("missing.json", 2, "Error: Invalid value for '--dask': missing.json: no such scheduler file"),
    ],
)
def test_bad_cluster_is_one_line_and_the_cache_untouched(
    value, exit_code, expected, tiny_model, tmp_path, monkeypatch, cli
):
    """An unreachable scheduler is one error line (exit 1); a value of the wrong form, click's usage error (2)."""
    monkeypatch.setattr("synthprobe.common.cluster.CONNECT_TIMEOUT_S", 1)
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [r.to_json() for r in make_records(2)])
    cache = tmp_path / "cache"
    args = [prompts, "--out", tmp_path / "out", "--model", tiny_model, "--cache", cache, "--dask", value, *FAST]
    result = cli(sd_generate.main, *args, exit_code=exit_code)
    if exit_code == 1:
        fails_with(result, expected)
    else:
        lines = result.output.strip().splitlines()
        assert lines[0].startswith("Usage: ") and lines[-1].startswith(expected), result.output
    assert not cache.exists() and not (tmp_path / "out").exists()


# ---- cnn-hooks ---------------------------------------------------------------------------------


def test_cnn_hooks_on_a_cluster_writes_the_same_store_and_resumes(engine, tmp_path, cli):
    import zarr

    from synthprobe.formats.activation_store import ActivationStore

    images = make_tree(tmp_path / "images", per_synset=6)  # 18 images, 4 blocks of 4 and one of 2
    args = [images, *SMALL, "--precision", "fp32", "--batch-size", "2", "--rows-per-write", "4", "--layers", "layer4*"]
    reference, clustered = tmp_path / "reference.zarr", tmp_path / "clustered.zarr"
    cli(cnn_hooks.main, *args, "--out", reference)
    address = engine.cluster.scheduler_address
    cli(cnn_hooks.main, *args, "--out", clustered, "--dask", address)
    assert_same_stores(clustered, reference)
    assert ActivationStore(clustered).attrs == ActivationStore(reference).attrs
    built = engine.client.run(lambda: [key[1] for key in sys.modules["synthprobe.common.cluster"]._worker_models])
    assert ["build_network"] in built.values(), "the workers ran no network"

    # As a kill leaves it: 8 rows committed, later ones written but not; the rerun resumes from row 8.
    zarr.open_group(str(clustered), mode="r+").attrs.update({"rows_committed": 8, "complete": False})
    cli(cnn_hooks.main, *args, "--out", clustered, "--dask", address)
    assert_same_stores(clustered, reference)


def test_cnn_hooks_runs_several_classifiers_on_a_cluster_one_after_another(engine, tmp_path, cli):
    import torch

    models = ["--model", "mobilenet_v3_small", "--precision", "fp32", "--batch-size", "2", "--layers", "avgpool"]
    args = [make_tree(tmp_path / "images", per_synset=2), *SMALL, *models]
    threads = torch.get_num_threads()
    torch.set_num_threads(*set(engine.client.run(torch.get_num_threads).values()))  # other counts sum otherwise
    try:
        cli(cnn_hooks.main, *args, "--out", tmp_path / "local" / "{model}.zarr")
    finally:
        torch.set_num_threads(threads)
    cli(cnn_hooks.main, *args, "--out", tmp_path / "dask" / "{model}.zarr", "--dask", engine.cluster.scheduler_address)
    for model in ("resnet18", "mobilenet_v3_small"):
        assert_same_stores(tmp_path / "dask" / f"{model}.zarr", tmp_path / "local" / f"{model}.zarr", f"{model}: ")


def test_slurm_script_asks_one_gpu_per_job_and_runs_one_worker():
    script = Path(__file__).parents[2] / "scripts" / "dask-slurm"
    result = subprocess.run(
        [sys.executable, str(script), "--print-job-script", "--partition", "gpu", "--cores", "4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for directive in ("#SBATCH -p gpu", "#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=4"):
        assert directive in lines, result.stdout
    assert sum("distributed.cli.dask_worker" in line for line in lines) == 1
