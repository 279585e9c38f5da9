"""Install, remove and inspect the opt-in auto-registration hook (`compressed-embeddings hook ...`).

With the hook on, plain `transformers` loads compressed checkpoints with no import and no `trust_remote_code`
flag: the stock example scripts run unchanged on them. It writes two files into the site-packages folder of the
current interpreter (`sysconfig`'s `purelib`, i.e. the active virtual environment), the same pattern setuptools
uses for editable installs:

- `compressed_embeddings_autoload.py`: a copy of `compressed_embeddings/autoload.py` (standard library only);
- `compressed_embeddings_autoload.pth`: one line that Python's `site` runs at every interpreter start,
  `import compressed_embeddings_autoload; compressed_embeddings_autoload.install()`.

The hook is global to that environment, hence opt-in, and light: at interpreter start it imports neither torch
nor transformers nor this package; see `autoload.py` for when registration happens.

Example:

```
compressed-embeddings hook install     # on, for this environment
compressed-embeddings hook status
compressed-embeddings hook uninstall   # off
COMPRESSED_EMBEDDINGS_AUTOLOAD=0 python run_glue.py ...   # off for one process
```
"""

import argparse
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

from .autoload import ENV_SWITCH, disabled_by_environment

MODULE_NAME = "compressed_embeddings_autoload"
PTH_NAME = f"{MODULE_NAME}.pth"
PTH_LINE = f"import {MODULE_NAME}; {MODULE_NAME}.install()\n"
SOURCE = Path(__file__).resolve().parent / "autoload.py"

__all__ = ["hook_status", "install_hook", "site_packages", "uninstall_hook"]


def site_packages() -> Path:
    """The folder the hook goes to by default: `purelib` of the running interpreter (its venv's site-packages)."""
    return Path(sysconfig.get_paths()["purelib"])


def _paths(target: str | os.PathLike | None) -> tuple[Path, Path, Path]:
    folder = Path(target).expanduser().resolve() if target is not None else site_packages()
    return folder, folder / PTH_NAME, folder / f"{MODULE_NAME}.py"


def _write_atomic(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def install_hook(target: str | os.PathLike | None = None) -> list[Path]:
    """Write the hook module, then the `.pth` line that imports it, into `target` (default: `site_packages()`).

    `target` must be a folder Python processes `.pth` files in (a site-packages folder, or one given to
    `site.addsitedir`) for the hook to take effect. Returns the files written.
    """
    folder, pth, module = _paths(target)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass an existing site-packages folder as --target.")
    _write_atomic(module, SOURCE.read_text(encoding="utf-8"))  # the module first: the .pth line imports it
    _write_atomic(pth, PTH_LINE)
    return [module, pth]


def uninstall_hook(target: str | os.PathLike | None = None) -> list[Path]:
    """Remove the `.pth` line, then the hook module (and its bytecode). Returns the files removed."""
    folder, pth, module = _paths(target)
    removed = []
    for path in (pth, module, *sorted((folder / "__pycache__").glob(f"{MODULE_NAME}.*.pyc"))):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def hook_status(target: str | os.PathLike | None = None) -> dict:
    """Whether the hook is installed in `target`, whether its module matches this package's, and whether the
    `COMPRESSED_EMBEDDINGS_AUTOLOAD` switch turns it off in this environment (`autoload.disabled_by_environment`)."""
    folder, pth, module = _paths(target)
    installed = pth.is_file() and module.is_file() and pth.read_text(encoding="utf-8") == PTH_LINE
    return {
        "installed": installed,
        "folder": str(folder),
        "files": [str(p) for p in (pth, module) if p.exists()],
        "up_to_date": installed and module.read_text(encoding="utf-8") == SOURCE.read_text(encoding="utf-8"),
        "disabled_by_environment": disabled_by_environment(),
    }


def hook_command_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "hook",
        help="Switch the opt-in hook that lets plain transformers load compressed checkpoints on or off.",
        description="install: write compressed_embeddings_autoload.pth (+ its module) into this interpreter's "
        "site-packages, so that plain transformers loads compressed checkpoints without import or "
        "trust_remote_code (e.g. the stock example scripts). uninstall: remove them. status: show the state.",
    )
    parser.add_argument("action", choices=["install", "uninstall", "status"])
    parser.add_argument(
        "--target",
        metavar="DIR",
        help=f"Folder to write to / remove from instead of this interpreter's site-packages ({site_packages()}).",
    )
    parser.set_defaults(func=hook_command)
    return parser


def hook_command(args: argparse.Namespace) -> int:
    try:
        if args.action == "install":
            for path in install_hook(args.target):
                print(f"wrote {path}")
            print("Hook on: new Python processes here load compressed checkpoints with plain transformers.")
        elif args.action == "uninstall":
            removed = uninstall_hook(args.target)
            for path in removed:
                print(f"removed {path}")
            print("Hook off." if removed else f"Hook was not installed in {_paths(args.target)[0]}.")
        else:
            status = hook_status(args.target)
            state = "on" if status["installed"] else "off"
            if status["installed"] and status["disabled_by_environment"]:
                state = f"installed, but switched off by {ENV_SWITCH}=0"
            print(f"hook: {state} ({status['folder']})")
            for path in status["files"]:
                print(f"  {path}")
            if status["installed"] and not status["up_to_date"]:
                print("  the installed module differs from this version's: run `compressed-embeddings hook install`")
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        if isinstance(error, PermissionError):
            print("Use a virtual environment you can write to, or pass --target DIR.", file=sys.stderr)
        return 2
    return 0
