"""The documentation's code runs: the code blocks of `docs/**/*.md` and of the READMEs, the package's docstring
examples, the figure script and the docs' build hooks.

Conventions for code blocks in the documentation (also in docs/contributing.md):

- A ```` ```python ```` block runs. The blocks of one page run in order, in one namespace, in a fresh temporary working
  directory. The Hub ids of real models (`TINY_CHECKPOINTS`) are replaced by tiny random checkpoints of the same
  family saved there, so that a page runs offline in seconds; any other Hub id fails (offline).
- `<!-- docs-test: skip (why) -->` on the line before a block: not run (needs a Hub token, several processes or
  GPUs, a script we do not ship). The reason is required.
- ```` ```bash ```` (and every other language) blocks do not run, unless preceded by `<!-- docs-test: run -->`: then
  the block runs with bash in the page's working directory, with the same substitutions and `compressed-embeddings`
  on the PATH.
- `<!-- docs-test: output -->` before a block: its text must equal what the block before it printed (stdout).
"""

import contextlib
import doctest
import importlib
import importlib.util
import io
import json
import os
import pkgutil
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, tiny_model
from tiny_tokenizers import bert_tokenizer, gpt2_tokenizer

import compressed_embeddings

ROOT = REPO  # where the pages are read from (a test points it elsewhere)
DOCS = REPO / "docs"
#: Markdown files whose code blocks are checked, relative to the repository root.
PAGES = ["README.md", "examples/README.md", *sorted(p.relative_to(REPO).as_posix() for p in DOCS.rglob("*.md"))]

#: Hub id in the docs -> (tiny family of tests/conftest.py, class saved, tokenizer), saved under the id's name.
TINY_CHECKPOINTS = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llama", "LlamaForCausalLM", gpt2_tokenizer),
    "sentence-transformers/all-MiniLM-L6-v2": ("bert", "BertModel", bert_tokenizer),
    "google-bert/bert-base-uncased": ("bert", "BertForMaskedLM", bert_tokenizer),
    "Qwen/Qwen2.5-0.5B": ("qwen2", "Qwen2ForCausalLM", gpt2_tokenizer),
    "microsoft/Phi-3-mini-4k-instruct": ("phi3", "Phi3ForCausalLM", gpt2_tokenizer),
}
#: Rows of the stand-ins' embeddings (their tokenizers use the first 99): enough for the default, transform coding at
#: ratio 10, whose decoder and codebooks need a few kilobytes of the embedding's budget.
STAND_IN_VOCAB = 1024
#: Hub repos the docs push to and then load: the folder the same page saved before stands in for them.
PUSHED_REPOS = {"me/smollm2-ae10": "smollm2-ae10", "me/minilm-ae10": "minilm-ae10"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<lang>[\w+-]*)[^`]*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*(?P<reason>.*?)\s*-->\s*$")
MARKERS = ("skip", "run", "output")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None
    reason: str

    @property
    def runs(self) -> bool:
        return (self.lang == "python" and self.marker not in ("skip", "output")) or self.marker == "run"

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def code_blocks(page: str) -> list[Block]:
    """The fenced code blocks of a page, with the `docs-test` marker on the line before each (if any)."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        end = i + 1
        while end < len(lines) and not re.match(rf"^{re.escape(indent)}{fence}\s*$", lines[end]):
            end += 1
        body = [line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : end]]
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.match(previous)
        blocks.append(
            Block(
                page=page,
                line=i + 1,
                lang=match["lang"].lower(),
                code="\n".join(body) + "\n",
                marker=marker["kind"] if marker else None,
                reason=marker["reason"] if marker else "",
            )
        )
        i = end + 1
    return blocks


def substitute(code: str, checkpoints: dict[str, Path]) -> str:
    for hub_id, path in checkpoints.items():
        code = code.replace(hub_id, str(path))
    for repo_id, folder in PUSHED_REPOS.items():
        code = code.replace(repo_id, folder)
    return code


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A tiny random checkpoint (weights, config, tokenizer) for each real model the docs name."""
    root = tmp_path_factory.mktemp("tiny-checkpoints")
    paths = {}
    for hub_id, (family, class_name, tokenizer) in TINY_CHECKPOINTS.items():
        path = root / hub_id.replace("/", "--")
        tiny_model(family, class_name, vocab_size=STAND_IN_VOCAB).save_pretrained(path)
        tokenizer().save_pretrained(path)
        paths[hub_id] = path
    return paths


# ------------------------------------------------------------------------------------------------ the conventions
def test_every_page_is_found_and_markers_are_known():
    assert "docs/quickstart.md" in PAGES and "docs/how-it-works.md" in PAGES and "README.md" in PAGES
    for page in PAGES:
        for block in code_blocks(page):
            if block.marker is not None:
                assert block.marker in MARKERS, f"{block}: unknown marker docs-test: {block.marker}"
            if block.marker == "skip":
                assert block.reason, f"{block}: `docs-test: skip` needs a reason, e.g. (needs a Hub token)"


def test_code_block_parser(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text(
        "Text\n\n```python\nx = 1\n```\n\n<!-- docs-test: skip (needs a token) -->\n```python\npush()\n```\n"
        "<!-- docs-test: run -->\n```bash\necho hi\n```\n<!-- docs-test: output -->\n```text\nhi\n```\n"
        "- item\n\n    ```python\n    y = 2\n    ```\n```bash\nnot run\n```\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    blocks = code_blocks("page.md")
    assert [(b.lang, b.marker, b.runs) for b in blocks] == [
        ("python", None, True),
        ("python", "skip", False),
        ("bash", "run", True),
        ("text", "output", False),
        ("python", None, True),
        ("bash", None, False),
    ]
    assert blocks[0].code == "x = 1\n" and blocks[4].code == "y = 2\n" and blocks[1].reason == "(needs a token)"


# ------------------------------------------------------------------------------------------------ the pages
def run_bash(block: Block, code: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode:
        pytest.fail(
            f"{block} failed ({result.returncode}):\n{code}\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}"
        )
    return result.stdout


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.runs for b in code_blocks(p))])
def test_page_code_runs(page, tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    printed = None
    for block in code_blocks(page):
        if block.marker == "output":
            assert printed is not None, f"{block}: `docs-test: output` follows no block that ran"
            assert printed.strip() == block.code.strip(), f"{block}: the page shows other output than the code prints"
            continue
        printed = None
        if not block.runs:
            continue
        code = substitute(block.code, tiny_checkpoints)
        if block.lang == "python":
            stdout = io.StringIO()
            with contextlib.redirect_stdout(stdout):
                try:
                    exec(compile(code, str(block), "exec"), namespace)
                except Exception as error:
                    raise AssertionError(f"{block} failed: {type(error).__name__}: {error}\n{code}") from error
            printed = stdout.getvalue()
        else:
            printed = run_bash(block, code, tmp_path)


# ------------------------------------------------------------------------------------------------ docstrings
class FencedDocTestParser(doctest.DocTestParser):
    """Docstring examples sit in ```python fences (transformers' style): a fence line ends the expected output."""

    def parse(self, string, name="<string>"):
        return super().parse(re.sub(r"(?m)^[ \t]*```\w*[ \t]*$", "", string), name)


#: Docstring examples that only illustrate a call on data the test does not have (a Hub model or dataset, a local
#: file, variables defined nowhere); they are not run. Better: mark such lines `# doctest: +SKIP` in the docstring
#: (as `compress.decompress_model` does) and remove them from here; an entry whose example is gone fails the test.
DOCTESTS_NOT_RUN: dict[str, str] = {}

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(compressed_embeddings.__path__, "compressed_embeddings.")
    if not name.endswith("__main__")
)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(parser=FencedDocTestParser())
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    output = io.StringIO()
    tests = {test.name: test for test in finder.find(module, module_name) if test.examples}
    for name in DOCTESTS_NOT_RUN:
        if name.rpartition(".")[0] == module_name:
            assert name in tests, f"{name} has no docstring example any more: remove it from DOCTESTS_NOT_RUN"
    for name, test in tests.items():
        if name not in DOCTESTS_NOT_RUN:
            runner.run(test, out=output.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, output.getvalue()


# ------------------------------------------------------------------------------------------------ figures, hooks
def test_figure_script_runs_on_a_synthetic_matrix(tmp_path):
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "figures" / "make_figures.py")
    make_figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_figures)
    summary = make_figures.main(["--synthetic", "--output", str(tmp_path)])
    assert {p.name for p in tmp_path.iterdir()} == {"direction-vs-svd.png", "loss-terms.png", "figures.json"}
    assert set(summary["methods"]) == {"SVD", "autoencoder (paper)"}
    assert json.loads((tmp_path / "figures.json").read_text())["shape"] == [2000, 64]


def test_committed_figures_match_their_numbers():
    summary = json.loads((DOCS / "figures" / "figures.json").read_text())
    assert summary["command"] == "python docs/figures/make_figures.py"
    assert (DOCS / "figures" / "direction-vs-svd.png").stat().st_size > 10_000
    page = (DOCS / "how-it-works.md").read_text()
    for name, data in summary["methods"].items():  # the page quotes the figures' numbers as the JSON has them
        assert f"{data['mean_cosine']:.4f}" in page, name


@pytest.mark.real
def test_committed_svd_numbers_reproduce():
    """SVD is deterministic and takes seconds: re-measure the figure's SVD row on the real SmolLM2 embedding."""
    from transformers import AutoModelForCausalLM

    from compressed_embeddings import CompressedEmbeddingConfig, compress_embedding
    from compressed_embeddings.assets import smollm2_path

    summary = json.loads((DOCS / "figures" / "figures.json").read_text())["methods"]["SVD"]
    matrix = AutoModelForCausalLM.from_pretrained(smollm2_path()).get_input_embeddings().weight.detach()
    _, report = compress_embedding(matrix, CompressedEmbeddingConfig.preset("svd", compression_ratio=10.0))
    assert report.code_dim == summary["code_dim"]
    assert report.mean_cosine == pytest.approx(summary["mean_cosine"], abs=1e-6)
    assert report.relative_frobenius_error == pytest.approx(summary["relative_frobenius_error"], abs=1e-6)


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return hooks


def test_hooks_drop_only_missing_optional_pages(tmp_path):
    hooks = _hooks()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "there.md").write_text("# There\n")
    nav = [{"Home": "index.md"}, {"Results": ["results/index.md", {"A": "results/there.md"}, {"B": "results/no.md"}]}]
    kept = hooks._filter_nav(nav, tmp_path, {"results/there.md", "results/no.md"})
    assert kept == [{"Home": "index.md"}, {"Results": ["results/index.md", {"A": "results/there.md"}]}]
    assert hooks._filter_nav([{"X": "missing.md"}], tmp_path, set()) == [{"X": "missing.md"}]  # mkdocs reports it


def test_hooks_list_results_with_their_commands(tmp_path, caplog):
    hooks = _hooks()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "scale.md").write_text(
        "# Scale\n\nCommand: `python benchmarks/scale.py`  \nMachine: 2 CPUs\n"
    )
    (tmp_path / "results" / "finetune.md").write_text("# Fine\n\nProduced by `python benchmarks/finetune.py --x` on\n")
    (tmp_path / "results" / "odd.md").write_text("# Odd\n\nno command\n")
    listing = hooks.results_list(tmp_path)
    first = listing.splitlines()[0]
    assert first.startswith("- [Fine](results/finetune.md)<br>command: `python benchmarks/finetune.py --x`")
    assert "- [Scale](results/scale.md)<br>command: `python benchmarks/scale.py`<br>machine: 2 CPUs" in listing
    assert "odd.md names no command" in caplog.text
    # and the real results folder: every page names its command
    caplog.clear()
    hooks.results_list(DOCS)
    assert "names no command" not in caplog.text


def test_hooks_turn_links_outside_docs_into_paths():
    hooks = _hooks()
    text = (
        "[the README](../README.md), [`benchmarks/scale.py`](../../benchmarks/scale.py), [ok](hub.md), [w](https://x)"
    )
    out = hooks._outside_links(text, DOCS / "results" / "page.md", DOCS)
    assert "[the README](../README.md)" in out  # ../README.md from docs/results/ is docs/README.md: not there, kept
    assert "`benchmarks/scale.py`," in out and "[ok](hub.md)" in out and "[w](https://x)" in out
    out = hooks._outside_links("[the README](../README.md)", DOCS / "index.md", DOCS)
    assert out == "the README (`README.md`)"


def test_tiny_checkpoints_stand_in_for_every_hub_id_the_docs_use():
    """A Hub id in a runnable block that is not substituted would need the network: list it in TINY_CHECKPOINTS."""
    hub_id = re.compile(r"""["']([A-Za-z0-9][\w.-]*/[\w.-]+)["']""")
    for page in PAGES:
        for block in code_blocks(page):
            if not block.runs:
                continue
            for found in hub_id.findall(block.code):
                if "/" in found and not Path(found).suffix and not found.startswith((".", "/")):
                    assert found in TINY_CHECKPOINTS or found in PUSHED_REPOS, f"{block}: {found!r} has no stand-in"
