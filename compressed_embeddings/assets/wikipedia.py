# Copyright 2026 The compressed_embeddings Authors.
# Licensed under the Apache License, Version 2.0.
"""English Wikipedia articles (gensim's test dump on PyPI) as plain text: MediaWiki markup cleaned away."""

from __future__ import annotations

import bz2
import html
import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

from .cache import _cached_entry, _extract_member, _source_info, download_archive
from .registry import ARCHIVES

__all__ = ["clean_wiki_markup", "parse_wiki_dump", "wikipedia_articles", "wikipedia_pages"]

_WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

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
