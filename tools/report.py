"""report: one self-contained HTML file from the analysis folders."""

from __future__ import annotations

import logging

import click

from synthprobe.common.cli import run_guarded, silent_option
from synthprobe.report.page import write_report

log = logging.getLogger("synthprobe")


def folders_option(flag: str, dest: str, help: str):
    """An option naming one input folder, repeated for more: never a comma list, as paths may hold commas."""
    return click.option(flag, dest, multiple=True, type=click.Path(), help=help)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@folders_option("--separability", "separability_dirs", "A separability output folder (repeatable).")
@folders_option("--bias", "bias_dirs", "A bias-report output folder (repeatable: one per classifier).")
@folders_option("--images", "image_dirs", "An image folder for galleries and thumbnails (repeatable).")
@folders_option(
    "--checks",
    "check_dirs",
    "An image-check folder (leak and miss rates, flagged images) or its image-check audit folder (repeatable).",
)
@folders_option(
    "--transfer",
    "transfer_dirs",
    "A transfer output folder: generated images vs photos (repeatable: one per classifier).",
)
@click.option("--title", default="synthprobe report", show_default=True, help="The report's title.")
@click.option("--notice", default=None, help="A line shown at the top of the report (e.g. that the models are toys).")
@click.option(
    "--allow-changed",
    is_flag=True,
    help='Show an image whose file no longer matches its manifest\'s sha256, marked "changed" (default: refuse).',
)
@click.option("-o", "--out", default="report.html", show_default=True, help="The HTML file to write.")
@silent_option
@run_guarded
@click.version_option(package_name="synthprobe")
def main(
    separability_dirs, bias_dirs, image_dirs, check_dirs, transfer_dirs, title, notice, allow_changed, out, silent
):
    """Assemble one HTML report (figures and thumbnails embedded) from analysis folders.

    Analyses of several classifiers (one folder set each) are also compared side by side.

    \b
    Example:
        report --separability out/separability/concepts --separability out/separability/bias \\
               --bias out/bias --images out/images/concepts --images out/images/bias \\
               --checks out/checks/bias --transfer out/transfer -o out/report.html
    """
    from pathlib import Path

    path = write_report(
        out,
        separability_dirs=[Path(d) for d in separability_dirs],
        bias_dirs=[Path(d) for d in bias_dirs],
        image_dirs=[Path(d) for d in image_dirs],
        check_dirs=[Path(d) for d in check_dirs],
        transfer_dirs=[Path(d) for d in transfer_dirs],
        title=title,
        notice=notice,
        allow_changed=allow_changed,
    )
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
