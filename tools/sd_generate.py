"""sd-generate: prompt records to an image folder, through a content-addressed cache."""

from __future__ import annotations

import logging

import click

from synthprobe.common.cli import run_guarded, silent_option
from synthprobe.common.locks import LOCK_FILE
from synthprobe.common.options import (
    FiniteFloat,
    ShardType,
    SizeType,
    batch_size_option,
    dask_option,
    device_option,
    one_writer,
    precision_option,
    setting_option,
)
from synthprobe.sd_generate import Params, Selection, generate, plan_run

log = logging.getLogger("synthprobe")

DEFAULTS = Params()


def shard_lock(options: dict) -> str:
    """Shards of one run write their own manifests into one folder at once: each holds the lock of its shard."""
    shard = options["shard"]
    return LOCK_FILE if shard is None else f".synthprobe.shard-{shard[0]}-of-{shard[1]}.lock"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthprobe")
@click.argument("prompts", metavar="PROMPTS.jsonl|-")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Output image folder.")
@setting_option("--model", DEFAULTS, help="Hugging Face model id or a local pipeline folder.")
@click.option("--revision", default=DEFAULTS.revision, help="Hub revision (branch, tag or commit) [default: main].")
@click.option(
    "--steps", type=click.IntRange(min=1), default=DEFAULTS.steps, help="Denoising steps [default: the family's]."
)
@click.option(
    "--guidance", type=FiniteFloat(), default=DEFAULTS.guidance, help="Guidance scale [default: the family's]."
)
@click.option(
    "--size",
    type=SizeType(),
    default=DEFAULTS.size,
    help="Image size: N for NxN, or WIDTHxHEIGHT [default: the family's].",
)
@batch_size_option(DEFAULTS.batch_size, "Images per pipeline call.")
@device_option(DEFAULTS.device, "CUDA, then MPS, then the CPU")
@precision_option(DEFAULTS.precision, "bf16 on CUDA, fp32 elsewhere")
@setting_option(
    "--quantize",
    DEFAULTS,
    type=click.Choice(["auto", "4bit", "8bit", "none"]),
    help="bitsandbytes quantization of the denoiser and the T5 text encoder; auto: 4-bit NF4 on CUDA, none elsewhere.",
)
@click.option("--offload", is_flag=True, help="Model CPU offload, for GPUs with little memory.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the denoiser (the first batch compiles it).")
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
@one_writer("out_dir", lock_name=shard_lock)
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
    compile_,
    cache_dir,
    shard,
    limit,
    dry_run,
    dask,
    silent,
):
    """Render prompt records (JSON Lines, `-` for stdin) to DIR/<id>.png plus DIR/images.jsonl.

    The model's family (SD3, SDXL, FLUX, PixArt-Sigma, Sana: README) sets the
    steps, guidance and size where they are not given.

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
    selection = Selection(prompts, shard, limit)
    params = Params(
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
        compile=compile_,
    )
    if dry_run:
        planned = plan_run(selection, params, cache_dir, engine=dask)
        for p in planned:
            click.echo(f"{'cached' if p.entry else 'generate'}\t{p.record.id}\t{p.key}")
        cached = sum(p.entry is not None for p in planned)
        click.echo(f"dry run: {len(planned) - cached} to generate, {cached} cached", err=True)
        return
    run = generate(selection, out_dir, params, cache_dir=cache_dir, engine=dask, silent=silent)
    result = run.result
    line = (
        f"{len(result.rows)} records -> {run.manifest}: {result.generated} generated, "
        f"{result.cached} cached, {result.failed} failed in {run.seconds:.1f} s"
    )
    if result.failed:
        raise click.ClickException(f"{line}; the failed rows hold their errors")
    log.info("%s", line)


if __name__ == "__main__":
    main()
