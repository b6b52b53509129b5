"""sd-generate: prompt records to an image folder, through a content-addressed cache."""

from __future__ import annotations

import logging
import time

import click

from synthprobe import library_versions
from synthprobe.common.cli import run_guarded, silent_option
from synthprobe.common.files import atomic_write, begin_outputs
from synthprobe.common.options import (
    ShardType,
    SizeType,
    batch_size_option,
    dask_option,
    device_option,
    precision_option,
    setting_option,
)
from synthprobe.formats.image_cache import ImageCache, default_image_cache
from synthprobe.formats.prompts import dumps, read_prompts, write_jsonl
from synthprobe.sd_generate import pipeline
from synthprobe.sd_generate.run import Planned, plan, run_generation
from synthprobe.sd_generate.settings import Params, ResolvedParams, resolve_settings, select_records

log = logging.getLogger("synthprobe")

RUN_SCHEMA = 1
DEFAULTS = Params()


def output_names(shard: tuple[int, int] | None) -> tuple[str, str]:
    """Shards write their own manifest so concurrent shards never overwrite one another's."""
    if shard is None:
        return "images.jsonl", "run.json"
    suffix = f"shard-{shard[0]}-of-{shard[1]}"
    return f"images.{suffix}.jsonl", f"run.{suffix}.json"


def run_config(settings: ResolvedParams, prompts: str, cache: ImageCache, shard, limit, dask) -> dict:
    return {
        "prompts": prompts,
        "model": settings.source.name,
        "revision": settings.source.revision,
        "model_identity": settings.model_identity,
        "steps": settings.steps,
        "guidance": settings.guidance,
        "width": settings.width,
        "height": settings.height,
        "batch_size": settings.batch_size,
        "device": settings.device,
        "dtype": settings.dtype,
        "quantization": settings.quantization,
        "offload": settings.offload,
        "scheduler": settings.scheduler,
        "cache": str(cache.root),
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "limit": limit,
        "dask": dask.spec if dask is not None else None,
    }


def print_dry_run(planned: list[Planned]) -> None:
    for p in planned:
        click.echo(f"{'cached' if p.entry else 'generate'}\t{p.record.id}\t{p.key}")
    cached = sum(p.entry is not None for p in planned)
    click.echo(f"dry run: {len(planned) - cached} to generate, {cached} cached", err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthprobe")
@click.argument("prompts", metavar="PROMPTS.jsonl|-")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Output image folder.")
@setting_option("--model", DEFAULTS, help="Hugging Face model id or a local pipeline folder.")
@click.option("--revision", default=DEFAULTS.revision, help="Hub revision (branch, tag or commit) [default: main].")
@setting_option("--steps", DEFAULTS, type=click.IntRange(min=1), help="Denoising steps.")
@setting_option("--guidance", DEFAULTS, type=float, help="Classifier-free guidance scale.")
@click.option(
    "--size",
    type=SizeType(),
    default=SizeType.format(DEFAULTS.size),
    show_default=True,
    help="Image size: N for NxN, or WIDTHxHEIGHT.",
)
@batch_size_option(DEFAULTS.batch_size, "Images per pipeline call.")
@device_option(DEFAULTS.device, "CUDA, then MPS, then the CPU")
@precision_option(DEFAULTS.precision, "bf16 on CUDA, fp32 elsewhere")
@setting_option(
    "--quantize",
    DEFAULTS,
    type=click.Choice(["auto", "4bit", "8bit", "none"]),
    help="bitsandbytes quantization of the transformer; auto: 4-bit NF4 on CUDA, none elsewhere.",
)
@click.option("--offload", is_flag=True, help="Model CPU offload, for GPUs with little memory.")
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(),
    help="Image cache folder [default: $SYNTHPROBE_CACHE/images, else ~/.cache/synthprobe/images].",
)
@click.option(
    "--shard",
    type=ShardType(),
    default=None,
    metavar="K/N",
    help="Only the records of shard K of N (by a hash of the id).",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N records (after --shard).")
@click.option("--dry-run", is_flag=True, help="List what would be generated and what is cached; change nothing.")
@dask_option
@silent_option
@run_guarded
def main(
    prompts,
    out_dir,
    model,
    revision,
    steps,
    guidance,
    size,
    batch_size,
    device,
    precision,
    quantize,
    offload,
    cache_dir,
    shard,
    limit,
    dry_run,
    dask,
    silent,
):
    """Render prompt records (JSON Lines, `-` for stdin) to DIR/<id>.png plus DIR/images.jsonl.

    Every image goes through a content-addressed cache first, so a rerun, an
    interrupted run or another shard never makes the same image twice; a run
    whose images are all cached does not load the model.

    \b
    Examples:
        sd-generate prompts.jsonl --out images/
        sd-generate prompts.jsonl --out images/ --model models/tiny-sd3 --size 64 --steps 4
        sd-generate prompts.jsonl --out images/ --shard 0/4      # and 1/4, 2/4, 3/4 at the same time
        sd-generate prompts.jsonl --out images/ --dask local:4   # 4 worker processes, one GPU each
        wn-prompts concepts --synsets bee.n.01 --per-synset 2 | sd-generate - --out images/ --dry-run
    """
    started = time.perf_counter()
    records = select_records(read_prompts(prompts), shard, limit)
    cache = ImageCache(cache_dir or default_image_cache(), writable=not dry_run)
    options = Params(
        model=model,
        revision=revision,
        steps=steps,
        guidance=guidance,
        size=size,
        batch_size=batch_size,
        device=device,
        precision=precision,
        quantize=quantize,
        offload=offload,
    )
    settings = resolve_settings(options, cache, dry_run, engine=dask)
    if dry_run:
        print_dry_run(plan(records, settings, cache))
        return
    manifest_name, run_name = output_names(shard)
    out = begin_outputs(out_dir, manifest_name, run_name)
    result = run_generation(
        records, settings, cache, out, build_pipeline=pipeline.load_pipeline, silent=silent, engine=dask
    )
    seconds = time.perf_counter() - started
    with atomic_write(out / run_name) as handle:
        handle.write(
            dumps(
                {
                    "schema": RUN_SCHEMA,
                    "tool": "sd-generate",
                    "manifest": manifest_name,
                    "config": run_config(settings, prompts, cache, shard, limit, dask),
                    "summary": result.summary(),
                    "seconds": round(seconds, 3),
                    "versions": library_versions("torch", "diffusers", "transformers"),
                }
            )
            + "\n"
        )
    write_jsonl(out / manifest_name, result.rows)
    line = (
        f"{len(result.rows)} records -> {out / manifest_name}: {result.generated} generated, "
        f"{result.cached} cached, {result.failed} failed in {seconds:.1f} s"
    )
    if result.failed:
        raise click.ClickException(f"{line}; the failed rows hold their errors")
    log.info("%s", line)


if __name__ == "__main__":
    main()
