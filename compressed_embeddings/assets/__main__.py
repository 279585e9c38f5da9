# Copyright 2026 The compressed_embeddings Authors.
# Licensed under the Apache License, Version 2.0.
"""`python -m compressed_embeddings.assets fetch | make-splits`: fill the cache, or regenerate the recorded splits."""

from __future__ import annotations

from .. import assets
from .brown import _brown_dir
from .models import minilm_path, smollm2_path
from .movie_reviews import _movie_reviews_dir
from .splits import make_splits
from .wikipedia import _wikipedia_dir


def _main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m compressed_embeddings.assets", description=assets.__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch and convert every asset into the cache")
    splits = sub.add_parser("make-splits", help="regenerate data/splits.json")
    splits.add_argument("--output", default=None)
    splits.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import logging as std_logging

    std_logging.basicConfig(level=std_logging.INFO, format="%(message)s")
    if args.command == "fetch":
        for fn in (smollm2_path, minilm_path, _brown_dir, _wikipedia_dir, _movie_reviews_dir):
            print(fn())
    else:
        print(make_splits(args.output, seed=args.seed))


if __name__ == "__main__":
    _main()
