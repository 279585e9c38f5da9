"""Staging and atomic publishing of an output folder: all or nothing.

[`write_atomically`] has a folder written into a hidden temporary folder next to its destination and moves it into
place only when complete. On an error, Ctrl-C or SIGTERM (as [`Terminated`], once a handler raises it) the temporary
folder is removed, so the destination is either absent (or, with `overwrite`, the previous one, untouched) or
complete. The final move is not cut in half by a signal: one arriving then is noted, and the output is complete.

Example:

```python
>>> import tempfile
>>> from pathlib import Path
>>> with tempfile.TemporaryDirectory() as folder:
...     output = write_atomically(Path(folder) / "out", lambda staging: (staging / "a.txt").write_text("done"),
...                               overwrite=False)
...     print((output / "a.txt").read_text(), sorted(path.name for path in Path(folder).iterdir()))
done ['out']
```
"""

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["OutputExistsError", "Terminated", "signals_deferred", "write_atomically"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that the same clean-up as for Ctrl-C runs."""


class OutputExistsError(FileExistsError):
    """The destination appeared while its replacement was being written (and `overwrite` was not given): it is left
    untouched and the new folder discarded."""

    def __init__(self, output: Path, doing: str):
        super().__init__(f"{output} appeared while {doing}")
        self.output = output


@contextlib.contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM instead of acting on them, around steps that must not be cut in half; yields the list of
    the signals received. Outside the main thread (where handlers cannot be set) it defers nothing."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in signals}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _publish(staging: Path, output: Path, overwrite: bool, doing: str) -> None:
    """Move the complete `staging` folder to `output`. An existing `output` is replaced only with `overwrite`, and
    is put back if the move fails."""
    if not output.exists() and not output.is_symlink():
        os.replace(staging, output)
        return
    if not overwrite:
        raise OutputExistsError(output, doing)
    backup = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    os.replace(output, backup / output.name)
    try:
        os.replace(staging, output)
    except BaseException:
        os.replace(backup / output.name, output)
        backup.rmdir()
        raise
    shutil.rmtree(backup, ignore_errors=True)


def write_atomically(
    output: Path, write: Callable[[Path], object], *, overwrite: bool, doing: str = "writing"
) -> Path:
    """Run `write(staging)` into a hidden temporary folder next to `output`, then move that folder into place and
    return `output`.

    An `output` that exists when the folder is complete is replaced only with `overwrite` (after the new folder is
    complete; it is put back if the move fails), else [`OutputExistsError`] (`doing` says what was being done, for its
    message). On an error, Ctrl-C or SIGTERM the temporary folder is removed, so `output` is either absent (or
    untouched) or complete; an error other than those two is announced on stderr before it propagates. A signal
    arriving during the final move is deferred and noted on stdout: the output is complete.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
        write(staging)
        with signals_deferred() as received:
            _publish(staging, output, overwrite, doing)
        if received:
            print(f"note: interrupt received while moving the finished checkpoint into place; {output} is complete")
        return output
    except BaseException as error:
        if staging is not None:
            with signals_deferred():
                shutil.rmtree(staging, ignore_errors=True)
        if not isinstance(error, (KeyboardInterrupt, OutputExistsError)):
            print(f"error: {type(error).__name__} while writing; no output was written to {output}", file=sys.stderr)
        raise
