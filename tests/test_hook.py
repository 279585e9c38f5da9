"""The opt-in auto-registration hook: `compressed-embeddings hook install|uninstall`, tested at real interpreter start.

How the test stays honest without touching the project's virtual environment: `.pth` files only run when Python's
`site` processes a site directory at start-up, so a `.pth` in a temporary folder on `PYTHONPATH` would be ignored,
and `site.addsitedir(tmp)` in the test's own code would run it *after* start-up, not as users get it. Instead we
create a throwaway virtual environment (`python -m venv --without-pip`, a fraction of a second) and make the
project's packages visible in it with a plain path `.pth` (`base.pth`: the project venv's site-packages and the
repository root). Its interpreter then runs `compressed-embeddings hook install` with no `--target`, which
writes into *its own* site-packages exactly as it would for a user, and every check is a fresh start of that
interpreter.
"""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_model
from safetensors.torch import save_file
from tiny_tokenizers import bert_tokenizer, gpt2_tokenizer

from compressed_embeddings import CompressedEmbeddingConfig, compress_model
from compressed_embeddings.hook import MODULE_NAME, PTH_LINE, PTH_NAME, hook_status

TIMEOUT = 300
HEAVY = ("torch", "transformers", "compressed_embeddings")

# What a process sees at start-up and after `import transformers` (printed as JSON by the throwaway interpreter).
PROBE = """
import json, sys
start = {name: name in sys.modules for name in NAMES}
hook = sys.modules.get("compressed_embeddings_autoload")
state = dict(hook.STATE) if hook else None
import transformers
after = sorted(sys.modules)
print("\\nRESULTS=" + json.dumps({"start": start, "hook_state": state, "after_import_transformers": after}))
""".replace("NAMES", repr(HEAVY + (MODULE_NAME,)))

LOAD = """
import json, sys
import torch
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel, Trainer  # transformers' own modules import its Auto package mid-import
from transformers import AutoConfig, AutoModelForCausalLM
ckpt, reference = sys.argv[1], load_file(sys.argv[2])
assert "compressed_embeddings" not in sys.modules  # nothing registered before the first Auto call
try:
    model = AutoModelForCausalLM.from_pretrained(ckpt).eval()  # no import, no trust_remote_code
except ValueError as error:
    print("\\nRESULTS=" + json.dumps({"error": str(error)}))
    raise SystemExit(0)
with torch.no_grad():
    diff = float((model(input_ids=reference["input_ids"]).logits - reference["logits"]).abs().max())
print("\\nRESULTS=" + json.dumps({
    "class": type(model).__name__, "module": type(model).__module__, "max_abs_diff": diff,
    "config": type(AutoConfig.from_pretrained(ckpt)).__name__,
    "hook_state": sys.modules["compressed_embeddings_autoload"].STATE,
}))
"""


def results_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, f"STDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-6000:]}"
    line = next(line for line in reversed(result.stdout.splitlines()) if line.startswith("RESULTS="))
    return json.loads(line[len("RESULTS=") :])


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A throwaway virtual environment that sees the project's packages but has its own site-packages."""
    root = tmp_path_factory.mktemp("hook-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(purelib).is_relative_to(root)
    (Path(purelib) / "base.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{REPO}\n")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(root / "hf_home"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": "",  # only what the venv's own site-packages provide
    }
    env.pop("COMPRESSED_EMBEDDINGS_AUTOLOAD", None)

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(python), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={**env, **extra_env},
            stdin=subprocess.DEVNULL,  # transformers asks "run the custom code? [y/N]" when it cannot load
        )

    return Path(purelib), run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("hook-ckpt")
    config = CompressedEmbeddingConfig(method="svd", code_dim=8)
    model = compress_model(tiny_model("gpt2"), config, show_progress=False)
    model.save_pretrained(root / "gpt2")
    gpt2_tokenizer().save_pretrained(root / "gpt2")
    bert = compress_model(tiny_model("bert"), config, show_progress=False)
    bert.save_pretrained(root / "bert")
    bert_tokenizer().save_pretrained(root / "bert")
    ids = torch.randint(5, 99, (2, 7), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        save_file({"input_ids": ids, "logits": model(input_ids=ids).logits}, str(root / "reference.safetensors"))
    return root


def test_hook_on_off_and_light(venv, checkpoint, tmp_path):
    purelib, run = venv
    load = ["-c", LOAD, str(checkpoint / "gpt2"), str(checkpoint / "reference.safetensors")]

    # Before: plain transformers refuses the checkpoint (it needs the package or trust_remote_code).
    baseline = results_of(run("-c", PROBE))
    assert baseline["hook_state"] is None and not any(baseline["start"].values())
    assert "trust_remote_code" in results_of(run(*load))["error"]

    # On: one command, into this interpreter's own site-packages.
    result = run("-m", "compressed_embeddings", "hook", "install")
    assert result.returncode == 0, result.stderr
    assert (purelib / PTH_NAME).read_text() == PTH_LINE and (purelib / f"{MODULE_NAME}.py").is_file()
    assert hook_status(purelib)["installed"] and hook_status(purelib)["up_to_date"]

    # Light: at start-up the hook module is the only new module; `import transformers` imports what it imports
    # without the hook, plus nothing (no torch, no compressed_embeddings).
    probe = results_of(run("-c", PROBE))
    assert probe["start"] == {"torch": False, "transformers": False, "compressed_embeddings": False, MODULE_NAME: True}
    assert probe["hook_state"] == {
        "finder_installed": True,
        "auto_config_wrapped": False,
        "registered": False,
        "error": None,
    }
    added = set(probe["after_import_transformers"]) - set(baseline["after_import_transformers"])
    assert added == {MODULE_NAME}, added
    assert "torch" not in probe["after_import_transformers"]

    # Plain transformers now loads the compressed checkpoint, with this package's classes, equal logits.
    loaded = results_of(run(*load))
    assert loaded["class"] == "CompressedGPT2LMHeadModel" and loaded["module"] == "compressed_embeddings.modeling"
    assert loaded["max_abs_diff"] < 1e-6 and loaded["config"] == "CompressedGPT2Config"
    assert loaded["hook_state"]["registered"] and not loaded["hook_state"]["auto_config_wrapped"]

    # The run_glue.py flow with no flag at all: config, tokenizer, model, stock Trainer, save_model.
    flows = str(REPO / "tests" / "trainer_flows.py")
    out = tmp_path / "glue-plain"
    trained = results_of(
        run(flows, "train", "plain", str(checkpoint / "bert"), str(checkpoint / "gpt2"), str(out), "glue")
    )
    assert trained["package_imported"] and trained["glue"]["class"] == "CompressedBertForSequenceClassification"
    assert trained["glue"]["steps"] == 4 and trained["glue"]["decoder_changed"]
    assert (out / "glue" / "model.safetensors").is_file() and (out / "glue" / "modeling.py").is_file()

    # Switched off for one process by the environment variable.
    assert "trust_remote_code" in results_of(run(*load, COMPRESSED_EMBEDDINGS_AUTOLOAD="0"))["error"]

    # Off: one command removes both files; plain transformers refuses again.
    result = run("-m", "compressed_embeddings", "hook", "uninstall")
    assert result.returncode == 0 and "removed" in result.stdout, result.stderr
    assert not (purelib / PTH_NAME).exists() and not (purelib / f"{MODULE_NAME}.py").exists()
    assert not hook_status(purelib)["installed"]
    assert "trust_remote_code" in results_of(run(*load))["error"]
    assert results_of(run("-c", PROBE))["hook_state"] is None


def test_install_target_and_status_in_process(tmp_path, capsys):
    """`--target` writes elsewhere; the status command reports it; a stale copy is flagged."""
    from compressed_embeddings.cli import main

    assert main(["hook", "status", "--target", str(tmp_path)]) == 0
    assert "hook: off" in capsys.readouterr().out
    assert main(["hook", "install", "--target", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {f"{MODULE_NAME}.py", PTH_NAME}
    (tmp_path / f"{MODULE_NAME}.py").write_text("# an older hook\n")
    assert main(["hook", "status", "--target", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "hook: on" in out and "differs" in out
    assert main(["hook", "uninstall", "--target", str(tmp_path)]) == 0
    assert list(tmp_path.iterdir()) == []
    assert main(["hook", "install", "--target", str(tmp_path / "missing")]) == 2
