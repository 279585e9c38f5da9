"""Staging and atomic publishing of an output folder: all or nothing.

[`write_atomically`] has a folder written into a hidden temporary folder next to its destination and moves it into
place only when complete. On an error, Ctrl-C or SIGTERM (as [`Terminated`], once a handler raises it) the temporary
folder is removed, so the destination is either absent (or, with `overwrite`, the previous one, untouched) or
complete. The final move is not cut in half by a signal: one arriving then is noted, and the output is complete.

Only SIGKILL or a power cut leave a temporary folder behind. Its name records the process that wrote it
(`.OUT.tmp-<pid>-<host>-XXXXXXXX`, host: a hash of this machine's name), so the next `write_atomically` into the same
folder removes the ones it can prove dead, with a note on stderr ([`remove_stale_staging`]).

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
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["OutputExistsError", "Terminated", "remove_stale_staging", "signals_deferred", "write_atomically"]

#: The name of a staging folder of `write_atomically`: `.OUT.tmp-<pid>-<host>-` + `tempfile.mkdtemp`'s 8 characters.
STAGING_NAME = re.compile(r"\.(?P<output>.+)\.tmp-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-\w{8}")


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


def _host() -> str:
    """A short hash of this machine's name, so that a staging folder on a shared file system is judged only by the
    machine whose processes it names."""
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _alive(pid: int) -> bool:
    """Whether process `pid` may exist on this machine: False only when the system says there is no such process (a
    zombie, another user's process, or a pid the check cannot take count as alive)."""
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, the system only checks that the process exists
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: another user's process
        pass
    return True


def remove_stale_staging(parent: Path) -> list[Path]:
    """Remove the staging folders of `write_atomically` in `parent` whose process is provably gone (killed by SIGKILL
    or a power cut before it could clean up): named by this module (`STAGING_NAME`), by a process of this machine that
    no longer exists. Anything else is left: folders of running processes or of other machines, other names (older
    releases' `.OUT.tmp-XXXXXXXX` too), files. Prints a note on stderr for each folder removed, and returns them."""
    removed = []
    for path in sorted(parent.iterdir()) if os.name == "posix" and parent.is_dir() else ():
        match = STAGING_NAME.fullmatch(path.name)
        if not match or match["host"] != _host() or path.is_symlink() or not path.is_dir():
            continue
        if not _alive(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            print(
                f"note: removed {path}, the temporary folder of an earlier run (process {match['pid']}, which no "
                "longer runs: killed or the machine stopped) that could not clean up after itself",
                file=sys.stderr,
            )
    return removed


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
    arriving during the final move is deferred and noted on stdout: the output is complete. Temporary folders that
    killed runs left next to `output` are removed first ([`remove_stale_staging`]).
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(output.parent)
    staging = None
    try:
        prefix = f".{output.name}.tmp-{os.getpid()}-{_host()}-"
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=output.parent))
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
