"""The run: read images, map them through the network with pooling hooks, write the store; resumable."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from synthprobe import library_versions
from synthprobe.cnn_hooks.forward import local_batches
from synthprobe.cnn_hooks.hook_points import (
    HookPoint,
    discover_hook_points,
    find_aliases,
    recorded_aliases,
    select_hook_points,
)
from synthprobe.cnn_hooks.run_cluster import cluster_batches
from synthprobe.cnn_hooks.writer import StoreFeed
from synthprobe.common.devices import resolve_device
from synthprobe.common.files import InputError, Sha256Memo, cache_root
from synthprobe.common.networks import Network
from synthprobe.common.precision import default_precision
from synthprobe.common.progress import progress
from synthprobe.formats.activation_store import ROWS_PER_WRITE, StoreWriter
from synthprobe.formats.image_folder import ImageFolder

log = logging.getLogger("synthprobe")


@dataclass
class Params:
    layers: list[str] = field(default_factory=list)
    pools: tuple[str, ...] = ("mean",)
    store_dtype: str = "float32"  # the stored values; compute is precision
    precision: str | None = None  # None: default_precision(device)
    device: str = "auto"
    batch_size: int = 16
    workers: int | None = 0  # None: decode_workers(device)
    skip_bad: bool = False
    rows_per_write: int = ROWS_PER_WRITE
    rebuild: bool = False  # delete the store first
    silent: bool = False
    class_names: list[str] | None = None  # for a head other than ImageNet-1k's (default class_0, class_1, ...)


@dataclass
class RunResult:
    written: int
    failed: int
    skipped: int  # already in the store
    seconds: float


def store_attrs(
    network: Network,
    precision: str,
    n_classes: int | None,
    folder: ImageFolder,
    class_names: list[str] | None = None,
    aliases: dict[str, str] | None = None,
) -> dict:
    from synthprobe.common.imagenet import N_IMAGENET_CLASSES, imagenet_names, imagenet_wnids

    attrs = {
        "model": network.name,
        "weights": network.weights,
        "weights_source": network.weights_source,
        "preprocessing": network.preprocessing.attrs(),
        "precision": precision,
        "source_folder": str(folder.root.resolve()),
        "source_layout": folder.layout,
        "source_sha256": folder.source_sha256,
        "hook_aliases": aliases or {},
        "versions": library_versions("torch", "torchvision", "timm", "zarr", "numpy", "pillow"),
    }
    if class_names is not None:
        if len(class_names) != n_classes:
            raise InputError(
                f"--class-names gives {len(class_names)} names; {network.name}'s head has {n_classes} classes"
            )
        attrs["class_names"] = list(class_names)
    elif n_classes == N_IMAGENET_CLASSES:  # torchvision's classifiers and timm's default heads: ImageNet-1k order
        attrs["classes"] = list(imagenet_wnids())
        attrs["class_names"] = list(imagenet_names())
    elif n_classes:
        attrs["class_names"] = [f"class_{i}" for i in range(n_classes)]
    return attrs


def run_hooks(folder: ImageFolder, out: Path, network: Network, settings: Params, engine=None) -> RunResult:
    """Append every image of ``folder`` that ``out`` does not hold yet; resumable at any moment.

    With a Dask ``engine`` (synthprobe.common.cluster) blocks of rows run on its workers.
    """
    return run_pass(folder, [(out, network)], settings, engine)[0]


def run_pass(folder: ImageFolder, stores: list[tuple[Path, Network]], settings: Params, engine=None) -> list[RunResult]:
    """run_hooks for several (store, network) at once: each image is decoded once for all of them, and each store
    gets the rows it lacks, as a run of its own would write them. On Dask the networks run one after another."""
    if engine is not None and len(stores) > 1:
        log.info("with --dask the %d classifiers run one after another", len(stores))
        return [run_hooks(folder, out, network, settings, engine) for out, network in stores]
    if engine is None:
        device, precision = device_and_precision(settings.device, settings.precision)
    else:
        device, precision = engine.as_a_worker_sees_it(device_and_precision, settings.device, settings.precision)
        if settings.workers:
            log.warning("--workers %d is not used with --dask: a Dask worker decodes its images", settings.workers)
    memo = source_memo(folder)
    feeds = [plan_store(folder, out, network, settings, precision, memo) for out, network in stores]
    union = np.logical_or.reduce([feed.need for feed in feeds])
    todo = folder.rows[union].reset_index(drop=True)
    for (out, _), feed in zip(stores, feeds):
        feed.wanted = feed.need[union]
        if len(feed.todo):
            retried = feed.todo["id"].isin(feed.retry).sum()
            log.info(
                "%s: %d images to run (%d already in the store%s), %d hook points, %s on %s",
                out,
                len(feed.todo),
                len(folder.rows) - len(feed.todo),
                f", {retried} failed before" if retried else "",
                len(feed.points),
                precision,
                device,
            )
    started = time.perf_counter()
    if len(todo):
        files = [folder.file(p).resolve() for p in todo["path"]]
        # Stamps taken before the images are read: a file changed in between is hashed again next time.
        stamps = [Sha256Memo.stamp(f) if f.is_file() else None for f in files]
        run_batches = local_batches if engine is None else partial(cluster_batches, engine)
        members = [(network, feed.points, feed.wanted) for (_, network), feed in zip(stores, feeds)]
        batches = run_batches(files, list(todo["sha256"]), members, device, precision, settings)
        try:
            with contextlib.ExitStack() as stack:
                for feed in feeds:
                    stack.enter_context(feed.writing(settings.pools))
                _feed_batches(todo, folder, files, stamps, batches, feeds, settings, memo)
        finally:
            batches.close()  # now, not when collected: removes the hooks (and cancels a cluster's tasks)
            memo.save()
    seconds = time.perf_counter() - started
    for feed in feeds:
        feed.writer.finish()
    return [RunResult(len(feed.todo), feed.failed, len(folder.rows) - len(feed.todo), seconds) for feed in feeds]


def plan_store(
    folder: ImageFolder, out: Path, network: Network, settings: Params, precision: str, memo: Sha256Memo
) -> StoreFeed:
    """The store opened (created, resumed or rebuilt) and checked against the folder, with the rows it lacks."""
    writer, points = open_store(folder, out, network, settings, precision)
    stored = writer.committed_rows(("id", "sha256", "status"))
    done = stored[stored["status"] != "failed"]
    check_unchanged(folder, done, out, memo)
    # Rows that failed (--skip-bad) are tried again and written over in place when they decode now.
    retry = {row_id: index for index, row_id in stored["id"][stored["status"] == "failed"].items()}
    return StoreFeed(writer, points, folder.rows, ~folder.rows["id"].isin(set(done["id"])).to_numpy(), retry)


def open_store(
    folder: ImageFolder, out: Path, network: Network, settings: Params, precision: str
) -> tuple[StoreWriter, list[HookPoint]]:
    """The store to append to (created, resumed or rebuilt) and the hook points it records."""
    # Discovery and aliases run on the CPU in fp32, wherever the model was left.
    network.module.cpu()
    points, n_classes = discover_hook_points(network.module, network.preprocessing)
    aliases = None if settings.rebuild else recorded_aliases(out)  # a store keeps the aliases it was made with
    if aliases is None:
        aliases = find_aliases(network.module, points, network.preprocessing, settings.pools)
    points = select_hook_points(points, settings.layers, aliases)
    kept = {alias: canonical for alias, canonical in aliases.items() if canonical in {p.name for p in points}}
    writer = StoreWriter(
        out,
        store_attrs(network, precision, n_classes, folder, settings.class_names, kept),
        {p.name: p.channels for p in points},
        settings.pools,
        settings.store_dtype,
        n_classes,
        rows_per_write=settings.rows_per_write,
        rebuild=settings.rebuild,
    )
    return writer, points


def device_and_precision(requested: str, precision: str | None) -> tuple[torch.device, str]:
    device = resolve_device(requested, auto_mps=False)
    return device, precision or default_precision(device)


def source_memo(folder: ImageFolder) -> Sha256Memo:
    """The file hashes of an ImageFolder tree, remembered per folder in the user cache."""
    name = hashlib.sha256(str(folder.root.resolve()).encode("utf-8")).hexdigest()[:16]
    return Sha256Memo(cache_root() / "sha256-memo" / f"{name}.json")


def check_unchanged(folder: ImageFolder, stored: pd.DataFrame, out: Path, memo: Sha256Memo) -> None:
    """Refuse images that differ from those already in the store under the same ids, and a store holding images
    the folder no longer lists.

    A manifest lists every image's sha256; the files of an ImageFolder tree are hashed here, reading
    only those whose size, mtime or ctime changed since they were last hashed.
    """
    if stored.empty:
        return
    current = folder.rows
    if folder.layout == "imagefolder":
        current = current[current["id"].isin(set(stored["id"]))]
        current = current.assign(sha256=[memo.sha256(folder.file(p).resolve()) for p in current["path"]])
        memo.save()
    both = current.merge(stored, on="id", suffixes=("", "_stored"))
    changed = both[(both["sha256"] != "") & (both["sha256_stored"] != "") & (both["sha256"] != both["sha256_stored"])]
    if len(changed):
        names = ", ".join(changed["path"].iloc[:3]) + (", ..." if len(changed) > 3 else "")
        raise InputError(
            f"{len(changed)} images of {folder.root} changed since {out} recorded them ({names}); "
            "rerun with --rebuild to start the store again, or write to a new store"
        )
    # The store's source (source_folder, source_sha256) may move or grow, but its rows stay the folder's: rows of
    # another folder, or of images the folder no longer lists, would make one analysis of neither.
    gone = stored["id"][~stored["id"].isin(set(folder.rows["id"]))]
    if len(gone):
        names = ", ".join(gone.iloc[:3]) + (", ..." if len(gone) > 3 else "")
        raise InputError(
            f"{out} holds {len(gone)} images that {folder.root} does not list ({names}): it was made from another "
            "folder, or images left this one; rerun with --rebuild to start the store again, or write to a new store"
        )


def _feed_batches(
    todo: pd.DataFrame,
    folder: ImageFolder,
    files: list[Path],
    stamps: list,
    batches: Iterator,
    feeds: list[StoreFeed],
    settings: Params,
    memo: Sha256Memo,
) -> None:
    """Check each batch's decoding and hand every store its rows of it, in order."""
    bar = progress(None, total=len(todo), desc="cnn-hooks", unit="img", silent=settings.silent)
    start = 0
    for digests, errors, outputs in batches:
        end = start + len(digests)
        for i, digest in enumerate(digests, start):
            if digest and stamps[i]:
                memo.remember(files[i], digest, stamps[i])
        bad = [i for i, error in enumerate(errors) if error]
        if bad and not settings.skip_bad:
            raise InputError(
                f"cannot decode {folder.file(todo['path'].iloc[start + bad[0]])} ({errors[bad[0]]}); "
                "--skip-bad records such images as failed and goes on"
            )
        for i in bad:
            log.warning("skipped %s: %s", folder.file(todo["path"].iloc[start + i]), errors[i])
        for feed, output in zip(feeds, outputs):
            if output is not None:
                rows = np.flatnonzero(feed.wanted[start:end])
                feed.add([digests[i] for i in rows], [errors[i] for i in rows], *output)
        start = end
        bar.update(len(digests))
    bar.close()
