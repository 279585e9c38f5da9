"""Load compressed models by Hub id (and revision) in a fresh process and compare them with reference outputs.

Usage: `python tests/hub_load.py {import,remote} MANIFEST.json` prints `RESULTS=<json>`. `import` imports
compressed_embeddings first; `remote` never does and relies on `trust_remote_code=True` (the code files are
downloaded from the repo). The Hub is whatever `HF_ENDPOINT` / `HF_HUB_CACHE` / `HF_HUB_OFFLINE` say: the fake
server of tests/hub_server.py, or a pre-populated cache offline. Used by tests/test_hub.py.
"""

import json
import sys

import torch
import transformers
from safetensors.torch import load_file


def main(mode: str, manifest_path: str) -> None:
    if mode == "import":
        import compressed_embeddings  # noqa: F401

    kwargs = {"trust_remote_code": True} if mode == "remote" else {}
    results = []
    for entry in json.load(open(manifest_path)):
        reference = load_file(entry["reference"])
        revision = {"revision": entry["revision"]} if entry.get("revision") else {}
        for auto_name in entry["auto_classes"]:
            model = getattr(transformers, auto_name).from_pretrained(entry["repo"], **revision, **kwargs).eval()
            with torch.no_grad():
                output = model(input_ids=reference["input_ids"])
            expected, got = (
                (reference["hidden"], output.last_hidden_state)
                if auto_name == "AutoModel"
                else (reference["logits"], output.logits)
            )
            layer = model.get_input_embeddings()
            results.append(
                {
                    "repo": entry["repo"],
                    "revision": entry.get("revision"),
                    "auto_class": auto_name,
                    "class": type(model).__name__,
                    "module": type(model).__module__,
                    "code_dim": getattr(layer, "code_dim", None),
                    "max_abs_diff": float((got - expected).abs().max()) if got.shape == expected.shape else None,
                }
            )
        tokenizer = transformers.AutoTokenizer.from_pretrained(entry["repo"], **revision, **kwargs)
        results[-1]["tokenizer_ids"] = tokenizer("w5 w6 w7")["input_ids"]
    results.append({"package_imported": "compressed_embeddings" in sys.modules})
    print("\nRESULTS=" + json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
