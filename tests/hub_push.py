"""Push tiny stock and compressed models to the Hub that `HF_ENDPOINT` points at (tests/hub_server.py).

Usage: `python tests/hub_push.py OUT_DIR` (with the environment of `FakeHub.client_env`). Writes reference outputs
and `OUT_DIR/manifest.json` describing every pushed (repo, revision) for tests/hub_load.py. Run as a subprocess by
tests/test_hub.py, because huggingface_hub reads `HF_ENDPOINT` when it is imported.

What it does, like a user would:
1. push a tiny GPT-2 and a tiny BERT, stock, with their tokenizers (`org/tiny-gpt2`, `org/tiny-bert`);
2. load each back by its Hub id, compress it (the Hub id becomes the card's `base_model`) and `push_to_hub` it with
   its tokenizer (`user/tiny-gpt2-ce`, `user/tiny-bert-ce`);
3. GPT-2 revisions: another compression to the branch `k4`, then a third one to `main`, so that `main`, `k4` and
   the first commit's id each name different weights;
4. a repo whose README.md was written by hand before the push (kept, metadata completed);
5. `save_pretrained(folder, push_to_hub=True, repo_id=...)`, the other public way to push.
"""

import json
import sys
from pathlib import Path

import torch
from huggingface_hub import HfApi
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_model  # noqa: E402
from tiny_tokenizers import bert_tokenizer, gpt2_tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM  # noqa: E402

from compressed_embeddings import CompressedEmbeddingConfig, compress_model  # noqa: E402

IDS = torch.randint(5, 99, (2, 7), generator=torch.Generator().manual_seed(3))


def _reference(model, path: Path) -> str:
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=IDS).logits
        hidden = model.base_model(input_ids=IDS).last_hidden_state
    save_file({"input_ids": IDS, "logits": logits, "hidden": hidden}, str(path))
    return str(path)


def _report(model) -> dict:
    report = model.compression_report
    return {name: getattr(report, name) for name in ("mean_cosine", "min_cosine", "relative_frobenius_error")}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    families = {
        "gpt2": (AutoModelForCausalLM, gpt2_tokenizer(), ["AutoModelForCausalLM", "AutoModel"]),
        "bert": (AutoModelForMaskedLM, bert_tokenizer(), ["AutoModelForMaskedLM", "AutoModel"]),
    }
    for family, (auto, tokenizer, auto_classes) in families.items():
        stock = f"org/tiny-{family}"
        tiny_model(family).push_to_hub(stock)
        tokenizer.push_to_hub(stock)

        repo = f"user/tiny-{family}-ce"
        base = auto.from_pretrained(stock)
        model = compress_model(base, CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False)
        model.push_to_hub(repo)
        commit = tokenizer.push_to_hub(repo)  # the repo's head: model + tokenizer
        entry = {"family": family, "repo": repo, "auto_classes": auto_classes, "k": 8, "report": _report(model)}
        entry["reference"] = _reference(model, out / f"{family}-k8.safetensors")
        if family != "gpt2":
            manifest.append({**entry, "revision": None})
            continue
        manifest.append({**entry, "revision": commit.oid, "pinned": "first commit id"})
        for k, revision in ((4, "k4"), (6, None)):
            config = CompressedEmbeddingConfig(method="svd", code_dim=k)
            again = compress_model(auto.from_pretrained(stock), config, show_progress=False)
            again.push_to_hub(repo, revision=revision)
            reference = _reference(again, out / f"{family}-k{k}.safetensors")
            manifest.append({**entry, "k": k, "revision": revision, "reference": reference, "report": _report(again)})

    # A hand-written card is kept; only its metadata is completed.
    notes = "user/notes-gpt2-ce"
    api = HfApi()
    api.create_repo(notes)
    readme = "---\nlicense: mit\n---\n\n# My notes\n\nHand-written.\n"
    api.upload_file(path_or_fileobj=readme.encode(), path_in_repo="README.md", repo_id=notes)
    config = CompressedEmbeddingConfig(method="svd", code_dim=8)
    model = compress_model(AutoModelForCausalLM.from_pretrained("org/tiny-gpt2"), config, show_progress=False)
    model.push_to_hub(notes, tags=["my-tag"])

    # The other public way: save_pretrained(..., push_to_hub=True).
    model.save_pretrained(out / "saved", push_to_hub=True, repo_id="user/saved-gpt2-ce")

    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print("PUSHED", len(manifest))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
