"""MkDocs hooks of the documentation site (named in mkdocs.yml; not part of the package).

- Optional pages: nav entries listed in `extra.optional_pages` are dropped when their file does not exist, so the
  nav can name results pages that a benchmark command has not written yet. Every other entry must exist.
- Results overview: `<!-- results-list -->` in `results.md` becomes a list of the results pages present at
  build time, each with its title and the command (and machine, where the page states one) that wrote it. A
  results page that names no command is a warning, so `mkdocs build --strict` fails on it.
- Command-line help: `<!-- cli-help: compress -->` becomes the output of `compressed-embeddings compress --help`
  (any sub-command), generated from the parser at build time, so the reference cannot drift from the code.
- Links to files of the repository outside `docs/` (`../README.md`, `../../benchmarks/finetune.py`) become the
  file's path in code style: the site has no copy of them, and the strict build would refuse the link.
"""

import contextlib
import io
import logging
import os
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.compressed_embeddings")

RESULTS_MARKER = "<!-- results-list -->"
RESULTS_ORDER = ("quality.md", "finetune.md", "inference.md", "inference-gpu.md", "scale.md")
_CLI_HELP = re.compile(r"<!--\s*cli-help:\s*(?P<args>[\w -]*?)\s*-->")
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")
_COMMAND = re.compile(r"`((?:python|make|accelerate|compressed-embeddings|pytest)\b[^`]*)`")
_MACHINE = re.compile(r"^\W*machine\W*:?\**\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def _filter_nav(items, docs_dir: Path, optional: set[str]):
    kept = []
    for item in items:
        if isinstance(item, dict):
            ((title, value),) = item.items()
            if isinstance(value, list):
                value = _filter_nav(value, docs_dir, optional)
                if value:
                    kept.append({title: value})
                continue
            item_path = value
        else:
            item_path = item
        if isinstance(item_path, str) and item_path in optional and not (docs_dir / item_path).is_file():
            log.info(f"optional page {item_path} does not exist: left out of the nav")
            continue
        kept.append(item)
    return kept


def on_config(config):
    optional = set(config["extra"].get("optional_pages", []))
    config["nav"] = _filter_nav(config["nav"], Path(config["docs_dir"]), optional)
    return config


def results_pages(docs_dir: Path) -> list[Path]:
    """The results pages present, in the order of the overview (known ones first, then any other)."""
    folder = docs_dir / "results"
    present = {p.name: p for p in folder.glob("*.md") if p.name != "index.md"}
    ordered = [present.pop(name) for name in RESULTS_ORDER if name in present]
    return ordered + [present[name] for name in sorted(present)]


def results_list(docs_dir: Path) -> str:
    lines = []
    for path in results_pages(docs_dir):
        text = path.read_text(encoding="utf-8")
        title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), path.stem)
        command = _COMMAND.search(text)
        machine = _MACHINE.search(text)
        if command is None:
            log.warning(f"results/{path.name} names no command (`python ...`) that produced it")
        entry = f"- [{title}](results/{path.name})"
        if command:
            entry += f"<br>command: `{command.group(1).strip()}`"
        if machine:
            entry += f"<br>machine: {machine.group(1).strip()}"
        lines.append(entry)
    return "\n".join(lines) if lines else "No results page has been written yet."


def cli_help(args: list[str], width: int = 100) -> str:
    """`compressed-embeddings ARGS --help`, as printed in a terminal `width` columns wide."""
    from compressed_embeddings.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            build_parser().parse_args([*args, "--help"])
    finally:
        if previous is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = previous
    return out.getvalue().rstrip()


def _outside_links(markdown: str, page_path: Path, docs_dir: Path) -> str:
    repo = docs_dir.parent

    def replace(match: re.Match) -> str:
        text, target = match.groups()
        if "://" in target or target.startswith(("#", "mailto:", "/")):
            return match.group(0)
        file_part = target.split("#", 1)[0]
        resolved = (page_path.parent / file_part).resolve()
        if resolved.is_relative_to(docs_dir) or not resolved.is_relative_to(repo) or not resolved.exists():
            return match.group(0)  # mkdocs checks it (and warns if it is broken)
        relative = resolved.relative_to(repo).as_posix()
        return text if text.strip("`") == relative else f"{text} (`{relative}`)"

    return _LINK.sub(replace, markdown)


def on_page_markdown(markdown, page, config, files):
    docs_dir = Path(config["docs_dir"]).resolve()
    if page.file.src_uri == "results.md":
        markdown = markdown.replace(RESULTS_MARKER, results_list(docs_dir))
    markdown = _CLI_HELP.sub(lambda m: f"```text\n{cli_help(m['args'].split())}\n```", markdown)
    return _outside_links(markdown, docs_dir / page.file.src_uri, docs_dir)
