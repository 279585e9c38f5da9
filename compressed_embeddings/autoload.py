"""Opt-in hook: plain `transformers` loads compressed checkpoints, with no import and no flag in user code.

Switched on and off with `compressed-embeddings hook install|uninstall` (see `compressed_embeddings/hook.py`),
which copies this file into site-packages as the top-level module `compressed_embeddings_autoload` next to
`compressed_embeddings_autoload.pth`, whose one line Python's `site` runs at every interpreter start:

    import compressed_embeddings_autoload; compressed_embeddings_autoload.install()

It must stay light, since it runs in every Python process of the environment: it imports only `sys` and `os`
and adds one finder to `sys.meta_path`. That finder waits for `transformers.models.auto.configuration_auto`,
which every Auto class imports and `import transformers` alone does not. Once that module has run, the finder
wraps `AutoConfig.from_pretrained` and `AutoConfig.for_model`; their first call imports `compressed_embeddings`
(which registers the compressed model types with `AutoConfig` / `AutoModel*`), puts the original methods back
and carries on. `AutoModel*.from_pretrained(path)` and the stock example scripts go through
`AutoConfig.from_pretrained`, so they load compressed checkpoints as if the package had been imported.

Registration waits for that first call, rather than happening when the module is imported, because
transformers' own modules import `transformers.models.auto` while they are half-imported themselves
(`modeling_layers`, `trainer`); importing model classes at that moment would fail.

Switch it off for one process with `COMPRESSED_EMBEDDINGS_AUTOLOAD=0`. This file imports nothing from the
package (it is loaded on its own, outside it) and nothing but the standard library.
"""

import os
import sys

TARGET = "transformers.models.auto.configuration_auto"
ENV_SWITCH = "COMPRESSED_EMBEDDINGS_AUTOLOAD"
_WRAPPED = ("from_pretrained", "for_model")

#: What the hook has done in this process (for `compressed-embeddings hook status` and tests).
STATE = {"finder_installed": False, "auto_config_wrapped": False, "registered": False, "error": None}


def disabled_by_environment() -> bool:
    """Whether `COMPRESSED_EMBEDDINGS_AUTOLOAD` switches the hook off in this process (`0`, `false`, `no`, `off`)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off")


def _register() -> None:
    """Import compressed_embeddings, which registers the compressed model types; warn instead of failing."""
    try:
        import compressed_embeddings  # noqa: F401
    except Exception as error:  # a broken or removed package must not break transformers
        import warnings

        STATE["error"] = f"{type(error).__name__}: {error}"
        warnings.warn(
            f"compressed_embeddings_autoload: `import compressed_embeddings` failed ({STATE['error']}), so compressed "
            "checkpoints are not registered (they still load with trust_remote_code=True). Switch the hook off with "
            f"`compressed-embeddings hook uninstall` or {ENV_SWITCH}=0.",
            RuntimeWarning,
            stacklevel=4,
        )
    else:
        STATE["registered"] = True


def _wrap_auto_config(configuration_auto) -> None:
    """Make the first `AutoConfig.from_pretrained` / `for_model` call register compressed types, then unwrap."""
    auto_config = configuration_auto.AutoConfig
    originals = {name: auto_config.__dict__[name] for name in _WRAPPED}

    def restore() -> None:
        for name, original in originals.items():
            setattr(auto_config, name, original)
        STATE["auto_config_wrapped"] = False

    def trigger(name: str):
        original = originals[name].__func__

        def first_call(cls, *args, **kwargs):
            if STATE["auto_config_wrapped"]:
                restore()
                _register()
            return getattr(cls, name)(*args, **kwargs)

        first_call.__name__, first_call.__qualname__ = name, original.__qualname__
        first_call.__doc__, first_call.__wrapped__ = original.__doc__, original
        return classmethod(first_call)

    for name in _WRAPPED:
        setattr(auto_config, name, trigger(name))
    STATE["auto_config_wrapped"] = True


class _Loader:
    """Runs the real loader of `TARGET`, then wraps its AutoConfig; otherwise behaves as the real loader."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # leave no trace of the hook in the module
        self._loader.exec_module(module)
        _wrap_auto_config(module)


class _Finder:
    """A `sys.meta_path` finder that only reacts to `TARGET` (once) and defers to the other finders for it."""

    compressed_embeddings_autoload = True

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET:
            return None
        _remove_finder()
        from importlib.util import find_spec

        spec = find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "compressed_embeddings_autoload", False)]
    STATE["finder_installed"] = False


def install() -> None:
    """Arm the hook in this process (what the `.pth` line calls at interpreter start)."""
    if disabled_by_environment() or STATE["finder_installed"] or STATE["auto_config_wrapped"] or STATE["registered"]:
        return
    if TARGET in sys.modules:  # transformers' Auto machinery is already imported: wrap it now
        _wrap_auto_config(sys.modules[TARGET])
        return
    sys.meta_path.insert(0, _Finder())
    STATE["finder_installed"] = True
