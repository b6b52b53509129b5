"""Option bundles used by more than one tool."""

from __future__ import annotations

import click

wordnet_dir_option = click.option(
    "--wordnet-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="A WordNet 3.0 dict folder (default: nltk's corpus, else /usr/share/wordnet).",
)
