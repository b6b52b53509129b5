"""WordNet 3.0 through nltk, wherever it can be found.

Order of attempts: nltk's installed corpus; a WordNet 3.0 dict folder (Debian's
``wordnet-base`` puts one in /usr/share/wordnet) turned once into an nltk_data
layout in the cache; ``nltk.download``; else one error that says how to fix it.

Debian's folder lacks two files nltk needs: ``lexnames`` (written from the
standard list) and ``index.sense`` (regenerated from the data files so that
``lemma_from_key`` works).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from synthprobe.common.files import InputError, cache_root

log = logging.getLogger("synthprobe")

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
DICT_FILES = [f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")] + [
    f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")
]
# The 45 lexicographer files of WordNet 3.0, numbered as in lexnames(5WN).
LEXNAMES = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location
noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process
noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change
verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation
verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather
adj.ppl""".split()
SYNTACTIC_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
FIX_HINT = (
    "install it with 'apt-get install wordnet-base' (then it is read from /usr/share/wordnet), "
    "point --wordnet-dir at a WordNet 3.0 dict folder, or run python -m nltk.downloader wordnet"
)


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{SYNTACTIC_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def _reader(root: Path):
    """An nltk reader for a WordNet 3.0 folder, without nltk's multilingual (OMW) set-up."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class WordNet30Reader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            # nltk maps other versions to 3.0 through its downloaded 'wordnet'
            # corpus; this folder is 3.0 itself, so there is nothing to map.
            return None

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions")
        return WordNet30Reader(str(root), None)


def build_nltk_layout(wordnet_dir: Path, nltk_data: Path) -> Path:
    """Copy a WordNet dict folder into ``nltk_data/corpora/wordnet`` with the missing files added.

    Built in a temp folder and renamed into place, so an interrupted build
    leaves nothing that looks finished.
    """
    missing = [name for name in DICT_FILES if not (wordnet_dir / name).is_file()]
    if missing:
        raise InputError(f"{wordnet_dir} is not a WordNet 3.0 dict folder (missing {', '.join(missing)})")
    target = nltk_data / "corpora" / "wordnet"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".wordnet-"))
    try:
        for name in DICT_FILES:
            # Copies, not links: nltk refuses paths that leave its root.
            shutil.copyfile(wordnet_dir / name, staging / name)
        (staging / "lexnames").write_text(lexnames_text())
        reader = _reader(staging)
        lines = {
            f"{lemma.key()} {synset.offset():08d} 0 0\n" for synset in reader.all_synsets() for lemma in synset.lemmas()
        }
        (staging / "index.sense").write_text("".join(sorted(lines)))
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "index.sense").is_file():
                raise
            shutil.rmtree(staging)  # another process finished first
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _installed_wordnet():
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    return wordnet


@functools.cache
def load_wordnet(wordnet_dir: str | None = None, cache_dir: str | None = None, use_installed: bool = True):
    """Return an nltk WordNetCorpusReader for WordNet 3.0 (see the module doc for the order).

    The prepared layout lives in ``cache_dir`` (default: the user cache, one
    folder per source folder, so ``--wordnet-dir`` always means that folder).
    """
    import nltk

    if wordnet_dir is not None and not Path(wordnet_dir).is_dir():
        raise InputError(f"WordNet folder {wordnet_dir} does not exist; {FIX_HINT}")
    if use_installed and wordnet_dir is None:
        try:
            return _installed_wordnet()
        except LookupError:
            pass
    source = Path(wordnet_dir or DEFAULT_WORDNET_DIR).resolve()
    source_key = hashlib.sha256(str(source).encode()).hexdigest()[:12]
    layout = Path(cache_dir) if cache_dir else cache_root() / "nltk_data" / source_key
    built = layout / "corpora" / "wordnet"
    # nltk only opens corpora below a folder on its data path.
    if str(layout) not in nltk.data.path:
        nltk.data.path.append(str(layout))
    if not (built / "index.sense").is_file() and source.is_dir():
        log.info("Preparing WordNet from %s for nltk in %s (once)", source, built)
        build_nltk_layout(source, layout)
    if (built / "index.sense").is_file():
        return _reader(built)
    try:
        if nltk.download("wordnet", quiet=True, raise_on_error=True):
            return _installed_wordnet()
    except Exception:  # offline, proxy, broken download: all end in the same advice
        pass
    raise InputError(f"WordNet 3.0 was not found; {FIX_HINT}")


def get_synset(wn, name: str):
    """Look up a synset by name (``bee.n.01``); an unknown name gets close suggestions."""
    from nltk.corpus.reader.wordnet import WordNetError

    try:
        return wn.synset(name)
    except (WordNetError, ValueError):
        pass
    lemma = name.split(".")[0]
    candidates = [s.name() for s in wn.synsets(lemma)] or [
        s.name()
        for word in difflib.get_close_matches(lemma, list(wn.all_lemma_names(pos="n")), n=3)
        for s in wn.synsets(word)[:2]
    ]
    hint = f"; did you mean {', '.join(candidates[:6])}?" if candidates else ""
    raise InputError(f"unknown synset {name!r}{hint}")


def lemma_text(synset) -> str:
    """The synset's first lemma as plain words (``tree_frog`` -> ``tree frog``)."""
    return synset.lemmas()[0].name().replace("_", " ")


def indefinite(phrase: str) -> str:
    """The phrase with its indefinite article: "an apple", "a bee"."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase
