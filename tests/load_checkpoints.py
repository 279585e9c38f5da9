"""Load saved compressed checkpoints in a fresh process and compare them with reference outputs.

Usage: `python tests/load_checkpoints.py {import,remote} MANIFEST.json` prints a JSON list of results.
`import` imports compressed_embeddings first; `remote` never does and relies on `trust_remote_code=True`.
Used by tests/test_save_load.py (run as a subprocess so that nothing registered in the test process leaks in).
"""

import json
import sys

import torch
import transformers
from safetensors.torch import load_file


def main(mode: str, manifest_path: str) -> None:
    entries = json.load(open(manifest_path))
    if mode == "import":
        import compressed_embeddings

        for entry in entries:  # families outside DEFAULT_FAMILIES are registered by one call
            if entry["family"] not in compressed_embeddings.DEFAULT_FAMILIES:
                compressed_embeddings.register_family(entry["family"])

    kwargs = {"trust_remote_code": True} if mode == "remote" else {}
    results = []
    for entry in entries:
        reference = load_file(entry["reference"])
        ids = reference["input_ids"]
        dtype = {"dtype": entry["dtype"]} if "dtype" in entry else {}  # e.g. "auto": the dtype it was saved in
        for auto_name in entry["auto_classes"]:
            model, info = getattr(transformers, auto_name).from_pretrained(
                entry["path"], output_loading_info=True, **kwargs, **dtype
            )
            model.eval()
            with torch.no_grad():
                output = model(input_ids=ids)
            result = {
                "family": entry["family"],
                "name": entry.get("name", entry["family"]),
                "auto_class": auto_name,
                "class": type(model).__name__,
                "module": type(model).__module__,
                "missing": sorted(info["missing_keys"]),
                "unexpected": sorted(info["unexpected_keys"]),
                "embedding": type(model.get_input_embeddings()).__name__,
                "base_model_prefix": model.base_model_prefix,
                "dtype": str(model.dtype).removeprefix("torch."),
                "float_dtypes": sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point()}),
            }
            embedding = model.get_input_embeddings()
            if getattr(embedding, "codes", 0) is None:  # packed codes: is the head's runtime layout there?
                runtime = embedding.packed_runtime()
                described = None if runtime is None else {"kernels": runtime.kernels, "bytes": runtime.nbytes()}
                result["runtime"] = described
                result["runtime_module"] = type(runtime).__module__
            head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            result["head"] = type(head).__name__ if head is not None else None
            result["head_shares_embedding"] = getattr(head, "embedding", None) is model.get_input_embeddings()
            own = getattr(head, "embedding", None) if not result["head_shares_embedding"] else None
            result["head_own_layer"] = None if own is None else type(own).__name__
            if auto_name == entry["saved_auto_class"]:
                result["max_abs_diff"] = float((output.logits.float() - reference["logits"].float()).abs().max())
                result["reference_scale"] = float(reference["logits"].float().abs().max())
                result["equal"] = bool(torch.equal(output.logits, reference["logits"]))
            elif auto_name == "AutoModel":
                result["max_abs_diff"] = float((output.last_hidden_state - reference["hidden"]).abs().max())
                result["equal"] = bool(torch.equal(output.last_hidden_state, reference["hidden"]))
            results.append(result)
    results.append({"package_imported": "compressed_embeddings" in sys.modules})
    print("RESULTS=" + json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
