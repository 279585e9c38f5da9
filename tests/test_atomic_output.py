"""`compressed-embeddings compress` writes its output atomically: into a hidden temporary folder next to OUTPUT, moved
into place only when complete. Ctrl-C, SIGTERM or a crash at any point leaves no OUTPUT (or the old one, untouched,
with --overwrite) and no temporary folder, with an exit status that says so.

The first test interrupts real runs in subprocesses; the others break in-process runs at chosen points.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import tiny_model

from compressed_embeddings import cli, publishing
from compressed_embeddings.modeling import CompressedModelMixin

SVD = ("--method", "svd", "--code-dim", "8", "--quiet")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("source") / "llama"
    tiny_model("llama").save_pretrained(folder)
    return folder


def leftovers(folder):
    """Hidden temporary folders (`.out.tmp-<pid>-<host>-*`, `.out.old-*`) left next to the output."""
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


@pytest.mark.parametrize(
    "sig, status, word",
    [(signal.SIGINT, cli.EXIT_INTERRUPTED, "interrupted"), (signal.SIGTERM, cli.EXIT_TERMINATED, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_during_a_real_run_leaves_nothing(source, tmp_path, sig, status, word):
    output = tmp_path / "out"
    stderr_path = tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "compressed_embeddings", "compress", str(source), "--output", str(output)]
    command += ["--method", "autoencoder", "--epochs", "1000000"]  # hours: it is training when the signal comes
    with open(stderr_path, "w") as stderr, open(tmp_path / "stdout.txt", "w") as stdout:
        process = subprocess.Popen(
            command,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            # A shell's background job (`cmd &`) starts with SIGINT ignored, and the child would inherit that:
            # give it the default disposition so that Python installs its Ctrl-C handler, as in a terminal.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + 120
            while "autoencoder" not in stderr_path.read_text():  # the progress bar: training has started
                assert process.poll() is None, stderr_path.read_text()
                assert time.monotonic() < deadline, "training never started"
                time.sleep(0.2)
            time.sleep(1.0)
            process.send_signal(sig)
            returncode = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    message = stderr_path.read_text()
    assert returncode == status, message
    assert f"{word}: no output was written" in message
    assert "Traceback" not in message
    assert not output.exists()
    assert leftovers(tmp_path) == []


def test_sigkill_leaves_a_folder_that_the_next_compress_removes(source, tmp_path, capsys):
    """SIGKILL cannot be caught: the run's temporary folder stays, named after its process; the next compress into the
    same folder removes it, since that process is gone, and says so."""
    writing = """
import sys, time
from pathlib import Path
from compressed_embeddings.publishing import write_atomically
write_atomically(Path(sys.argv[1]), lambda staging: ((staging / "model.safetensors").touch(), time.sleep(600)),
                 overwrite=False)
"""
    process = subprocess.Popen([sys.executable, "-c", writing, str(tmp_path / "out")])
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.tmp-*/model.safetensors")):  # it is writing
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    process.kill()
    process.wait(timeout=60)  # reaped: the process no longer exists
    (stale,) = leftovers(tmp_path)
    assert stale.startswith(f".out.tmp-{process.pid}-")
    assert cli.main(["compress", str(source), "--output", str(tmp_path / "other"), *SVD]) == 0
    assert f"note: removed {tmp_path / stale}, the temporary folder of an earlier run (process {process.pid}" in (
        capsys.readouterr().err
    )
    assert leftovers(tmp_path) == [] and (tmp_path / "other" / "model.safetensors").exists()


def test_only_provably_dead_temporary_folders_are_removed(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = publishing._host()
    other_host = f"{(int(host, 16) + 1) % 2**32:08x}"
    names = {
        f".a.tmp-{dead.stdout.strip()}-{host}-abcd_123": False,  # removed: its process has exited
        f".a.tmp-{os.getpid()}-{host}-abcd_124": True,  # a live process (this one)
        f".a.tmp-{dead.stdout.strip()}-{other_host}-abcd_125": True,  # another machine's (a shared file system)
        ".a.tmp-abcd_126": True,  # an older release's name: whose it is cannot be known
        ".a.old-abcd_127": True,  # a previous output moved aside: never removed
        "a.tmp-1-00000000-abcd_128": True,  # not hidden: not ours
    }
    for name in names:
        (tmp_path / name).mkdir()
    assert publishing.remove_stale_staging(tmp_path) == [tmp_path / next(iter(names))]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(name for name, kept in names.items() if kept)
    assert capsys.readouterr().err.count("note: removed") == 1


def _save_then(exception):
    """A `save_pretrained` that writes the checkpoint, then fails as a crash or Ctrl-C would, mid-save."""
    original = CompressedModelMixin.save_pretrained

    def save_pretrained(self, save_directory, *args, **kwargs):
        original(self, save_directory, *args, **kwargs)
        assert (save_directory / "model.safetensors").exists()
        raise exception

    return save_pretrained


def test_ctrl_c_while_saving_leaves_nothing(source, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(CompressedModelMixin, "save_pretrained", _save_then(KeyboardInterrupt()))
    output = tmp_path / "out"
    assert cli.main(["compress", str(source), "--output", str(output), *SVD]) == cli.EXIT_INTERRUPTED
    assert "interrupted: no output was written" in capsys.readouterr().err
    assert not output.exists() and leftovers(tmp_path) == []


def test_crash_while_saving_leaves_nothing_and_says_so(source, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(CompressedModelMixin, "save_pretrained", _save_then(OSError(28, "No space left on device")))
    output = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):  # a crash: traceback and exit status 1 from the interpreter
        cli.main(["compress", str(source), "--output", str(output), *SVD])
    assert f"error: OSError while writing; no output was written to {output}" in capsys.readouterr().err
    assert not output.exists() and leftovers(tmp_path) == []


@pytest.fixture
def existing(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("the previous checkpoint")
    return folder


def test_overwrite_replaces_the_old_folder_once_the_new_one_is_complete(source, existing, tmp_path, monkeypatch):
    seen_during_save = []
    original = CompressedModelMixin.save_pretrained

    def save_pretrained(self, save_directory, *args, **kwargs):
        seen_during_save.append((existing / "keep.txt").exists())  # the old folder is still in place while saving
        return original(self, save_directory, *args, **kwargs)

    monkeypatch.setattr(CompressedModelMixin, "save_pretrained", save_pretrained)
    assert cli.main(["compress", str(source), "--output", str(existing), "--overwrite", *SVD]) == 0
    assert seen_during_save == [True]
    names = {path.name for path in existing.iterdir()}
    assert "keep.txt" not in names and {"model.safetensors", "config.json", "compression_report.json"} <= names
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("exception", [KeyboardInterrupt(), RuntimeError("boom")])
def test_overwrite_keeps_the_old_folder_when_the_new_one_fails(source, existing, tmp_path, monkeypatch, exception):
    monkeypatch.setattr(CompressedModelMixin, "save_pretrained", _save_then(exception))
    try:
        status = cli.main(["compress", str(source), "--output", str(existing), "--overwrite", *SVD])
    except RuntimeError:
        status = 1
    assert status == (cli.EXIT_INTERRUPTED if isinstance(exception, KeyboardInterrupt) else 1)
    assert [path.name for path in existing.iterdir()] == ["keep.txt"]
    assert (existing / "keep.txt").read_text() == "the previous checkpoint"
    assert leftovers(tmp_path) == []


def test_overwrite_puts_the_old_folder_back_if_the_final_move_fails(source, existing, tmp_path, monkeypatch):
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append((str(src), str(dst)))
        if len(calls) == 2:  # 1: old folder -> backup, 2: new folder -> output (fails), 3: backup -> output
            raise OSError(18, "Invalid cross-device link")
        return real_replace(src, dst)

    monkeypatch.setattr(publishing.os, "replace", replace)
    with pytest.raises(OSError, match="cross-device"):
        cli.main(["compress", str(source), "--output", str(existing), "--overwrite", *SVD])
    assert len(calls) == 3
    assert [path.name for path in existing.iterdir()] == ["keep.txt"]
    assert leftovers(tmp_path) == []


def test_ctrl_c_while_moving_into_place_is_deferred(source, tmp_path, monkeypatch, capsys):
    """Moving the finished folder into place is not cut in half: a Ctrl-C then is noted, and the output is complete."""
    # As in a terminal, also when the test run itself was started as a background job (SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request_restore = lambda: signal.signal(signal.SIGINT, previous)  # noqa: E731
    real_replace = os.replace

    def replace(src, dst):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C exactly while the finished folder is being moved
        return real_replace(src, dst)

    monkeypatch.setattr(publishing.os, "replace", replace)
    output = tmp_path / "out"
    assert cli.main(["compress", str(source), "--output", str(output), *SVD]) == 0
    assert "is complete" in capsys.readouterr().out
    assert (output / "model.safetensors").exists() and (output / "compression_report.json").exists()
    assert leftovers(tmp_path) == []
    restored = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    request_restore()
    assert restored, "the Ctrl-C handler is restored"


def test_output_appearing_during_the_run_is_not_overwritten(source, tmp_path, monkeypatch, capsys):
    output = tmp_path / "out"
    original = CompressedModelMixin.save_pretrained

    def save_pretrained(self, save_directory, *args, **kwargs):
        output.mkdir()
        (output / "theirs.txt").write_text("written by someone else meanwhile")
        return original(self, save_directory, *args, **kwargs)

    monkeypatch.setattr(CompressedModelMixin, "save_pretrained", save_pretrained)
    assert cli.main(["compress", str(source), "--output", str(output), *SVD]) == cli.EXIT_USAGE
    assert "appeared while compressing" in capsys.readouterr().err
    assert [path.name for path in output.iterdir()] == ["theirs.txt"]
    assert leftovers(tmp_path) == []
