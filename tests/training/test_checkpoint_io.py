"""Checkpoints reach the disk whole or not at all, whatever $TMPDIR is, and load with weights_only=True."""

import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from flightmind.atomic import TEMP_SUFFIX, remove_leftovers
from flightmind.errors import FlightMindError
from flightmind.model.checkpoint import load_checkpoint_file
from flightmind.training import checkpoint_io
from flightmind.training.checkpoint_io import AtomicCheckpointIO

REPO = Path(__file__).resolve().parents[2]


class Evil:
    """Unpickling it creates a marker file: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "model_config": {"depth": 2}, "payload": Evil(marker)}, path)
    return path


def bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.ckpt"
    torch.save({"w": torch.zeros(10_000)}, good)
    files = {"empty": tmp_path / "empty.ckpt", "random": tmp_path / "random.ckpt", "truncated": tmp_path / "trunc.ckpt"}
    files["empty"].write_bytes(b"")
    files["random"].write_bytes(random.Random(0).randbytes(5000))
    files["truncated"].write_bytes(good.read_bytes()[:20_000])
    return files


@pytest.mark.parametrize(
    "kind, words",
    [("empty", "empty (0 bytes"), ("random", "torch.save did not write"), ("truncated", "truncated or damaged")],
)
def test_unreadable_checkpoints_are_one_line_naming_the_file_and_the_reason(tmp_path, kind, words):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(FlightMindError) as err:
        AtomicCheckpointIO().load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and words in message and "\n" not in message


def test_a_pickle_that_runs_code_is_refused_even_when_the_environment_forces_unsafe_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "PWNED"
    path = evil_checkpoint(tmp_path / "evil.ckpt", marker)
    for load in (lambda: AtomicCheckpointIO().load_checkpoint(path, weights_only=False), lambda: load_checkpoint_file(path)):
        with pytest.raises(FlightMindError) as err:
            load()
        assert "weights_only=True" in str(err.value) and "GLOBAL" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    # The control: the same file does run code when loaded unsafely.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_save_writes_in_the_checkpoint_directory_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "nonexistent-tmp"))  # never used
    path = tmp_path / "ckpts" / "step_1.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.arange(10)}, path)
    assert torch.equal(load_checkpoint_file(path)["w"], torch.arange(10))
    assert sorted(p.name for p in path.parent.iterdir()) == ["step_1.ckpt"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mount_tmpfs(directory: Path, size: str) -> bool:
    directory.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], capture_output=True).returncode == 0


FILL_DISK = textwrap.dedent(
    """
    import resource, signal, sys, torch
    from flightmind.errors import FlightMindError
    from flightmind.training.checkpoint_io import save_atomically
    directory, limit = sys.argv[1], int(sys.argv[2])
    save_atomically({"w": torch.ones(1_000_000)}, directory + "/step_1.ckpt")
    save_atomically({"w": torch.ones(1_000_000)}, directory + "/last.ckpt")
    if limit:  # no tmpfs: a file-size limit makes the write fail the same way (EFBIG instead of ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    for name in ("step_2.ckpt", "last.ckpt"):
        try:
            save_atomically({"w": torch.full((8_000_000,), 2.0)}, directory + "/" + name)
        except FlightMindError as e:
            print(e)
    """
)


def test_a_full_disk_during_a_save_keeps_the_old_files_and_says_so_in_one_line(tmp_path):
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, "20m")
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        limit = "0" if mounted else str(10_000_000)
        result = subprocess.run([sys.executable, "-c", FILL_DISK, str(disk), limit], capture_output=True, text=True, env=env, timeout=300)
        lines = result.stdout.splitlines()
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(lines) == 2, result.stdout
        for name, line in zip(("step_2.ckpt", "last.ckpt"), lines):
            assert f"cannot write checkpoint {disk / name}:" in line and "intact" in line
            assert ("No space left on device" if mounted else "File too large") in line
        assert sorted(p.name for p in disk.iterdir()) == ["last.ckpt", "step_1.ckpt"]  # no step_2, no temp file
        for name in ("last.ckpt", "step_1.ckpt"):
            assert torch.equal(load_checkpoint_file(disk / name)["w"], torch.ones(1_000_000))
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)])


FORK_SAVERS = textwrap.dedent(
    """
    import os, sys, torch
    from flightmind.training.checkpoint_io import AtomicCheckpointIO
    directory = sys.argv[1]
    for line in sys.stdin:  # one saver per line; "1": asynchronous
        pid = os.fork()
        if pid == 0:
            io = AtomicCheckpointIO(asynchronous=line.strip() == "1")
            for step in range(1, 10_000):
                checkpoint = {"global_step": step, "w": torch.full((4_000_000,), float(step))}  # 16 MB
                io.save_checkpoint(checkpoint, f"{directory}/step_{step % 3}.ckpt")
                io.save_checkpoint(checkpoint, f"{directory}/last.ckpt")
                io.wait()
                print("step", step, flush=True)
            os._exit(0)
        print("pid", pid, flush=True)
        os.waitpid(pid, 0)  # until the test kills it
        print("reaped", flush=True)
    """
)


def _filesystem(path: Path) -> int:
    return os.stat(path).st_dev


@pytest.mark.slow
def test_kill_9_during_saves_with_tmpdir_on_another_filesystem_never_leaves_a_partial_checkpoint(tmp_path):
    """Synchronous and asynchronous saves alike."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or _filesystem(shm) == _filesystem(tmp_path):
        pytest.skip("needs /dev/shm on another filesystem than the test's directory")
    tmpdir = Path(tempfile.mkdtemp(dir=shm, prefix="flightmind-test-"))
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmpdir)}
    rng = random.Random(0)
    kills, leftovers_seen, loaded = 0, 0, 0
    # One process imports torch once and forks a saver per kill: 8 kills cost 8 forks, not 8 imports.
    forks = subprocess.Popen([sys.executable, "-c", FORK_SAVERS, str(ckpts)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for kill in range(8):
        forks.stdin.write(f"{kill % 2}\n")  # every other saver writes in a background thread
        forks.stdin.flush()
        pid, saved = None, False
        while pid is None or not saved:  # the saver runs and its first pair of saves is complete
            line = forks.stdout.readline().split()
            pid = int(line[1]) if line[0] == "pid" else pid
            saved = saved or line[0] == "step"
        time.sleep(rng.uniform(0.0, 0.6))  # somewhere inside a save
        os.kill(pid, signal.SIGKILL)
        while forks.stdout.readline().strip() != "reaped":
            pass
        kills += 1
        leftovers_seen += len(list(ckpts.glob(f".*{TEMP_SUFFIX}")))
        for path in ckpts.glob("*.ckpt"):
            checkpoint = load_checkpoint_file(path)  # raises on a partial file
            assert torch.all(checkpoint["w"] == checkpoint["global_step"])
            loaded += 1
        remove_leftovers(ckpts)  # what the next run does at its start
        assert not list(ckpts.glob(f".*{TEMP_SUFFIX}"))
    forks.stdin.close()
    assert forks.wait(timeout=60) == 0
    assert kills == 8 and loaded >= 8
    assert leftovers_seen >= 1  # at least one kill landed inside a save
    assert not list(tmpdir.iterdir())  # nothing goes through $TMPDIR
    tmpdir.rmdir()


def tied_checkpoint() -> dict:
    embedding = torch.randn(64, 16)
    return {
        "global_step": 3,
        "state_dict": {"wte.weight": embedding, "lm_head.weight": embedding, "norm.weight": torch.ones(16)},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.randn(64, 16), "step": torch.tensor(3.0)}}}],
    }


def test_an_asynchronous_save_writes_the_bytes_of_a_direct_save_of_the_state_at_the_call(tmp_path, monkeypatch):
    gate = threading.Event()
    write = checkpoint_io.save_atomically

    def write_after_the_gate(*args):
        assert gate.wait(10)
        write(*args)

    monkeypatch.setattr(checkpoint_io, "save_atomically", write_after_the_gate)
    io = AtomicCheckpointIO(asynchronous=True)
    for round in range(2):
        gate.clear()  # the second save reuses the host buffers of the first
        checkpoint = tied_checkpoint()
        with open(tmp_path / f"direct_{round}.ckpt", "wb") as file:  # through a file object, as save_atomically
            torch.save(checkpoint, file)
        io.save_checkpoint(checkpoint, tmp_path / f"async_{round}.ckpt")
        for tensor in (checkpoint["state_dict"]["wte.weight"], checkpoint["optimizer_states"][0]["state"][0]["exp_avg"]):
            tensor.add_(1.0)  # training goes on before the thread writes: the file holds the state at the call
        gate.set()
        io.wait()
        assert (tmp_path / f"async_{round}.ckpt").read_bytes() == (tmp_path / f"direct_{round}.ckpt").read_bytes()
    loaded = load_checkpoint_file(tmp_path / "async_1.ckpt")
    assert loaded["state_dict"]["wte.weight"].untyped_storage().data_ptr() == loaded["state_dict"]["lm_head.weight"].untyped_storage().data_ptr()
    io.teardown()
    assert not list(tmp_path.glob(f".*{TEMP_SUFFIX}"))


def test_a_failed_asynchronous_save_is_one_line_at_the_next_save_and_at_teardown(tmp_path):
    (tmp_path / "not_a_directory").write_text("a file where the checkpoint directory should be")
    io = AtomicCheckpointIO(asynchronous=True)
    io.save_checkpoint(tied_checkpoint(), tmp_path / "not_a_directory" / "step_1.ckpt")  # returns: the write is queued
    with pytest.raises(FlightMindError, match=r"cannot write checkpoint .*not_a_directory/step_1.ckpt"):
        io.save_checkpoint(tied_checkpoint(), tmp_path / "step_2.ckpt")
    io.save_checkpoint(tied_checkpoint(), tmp_path / "not_a_directory" / "step_3.ckpt")
    with pytest.raises(FlightMindError, match=r"step_3.ckpt"):
        io.teardown()
    linked = []
    io.then(linked.append, "after")  # the executor is gone after teardown: a new one starts
    io.wait()
    assert linked == ["after"] and not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_a_link_queued_behind_a_failed_save_is_skipped_and_the_failure_is_reported_once(tmp_path, monkeypatch):
    from flightmind.atomic import link_or_copy

    gate = threading.Event()
    write = checkpoint_io.save_atomically

    def write_after_the_gate(*args):  # the link is queued before the save fails
        assert gate.wait(10)
        write(*args)

    monkeypatch.setattr(checkpoint_io, "save_atomically", write_after_the_gate)
    (tmp_path / "not_a_directory").write_text("a file where the checkpoint directory should be")
    failing, saved = tmp_path / "not_a_directory" / "step_2.ckpt", tmp_path / "step_4.ckpt"
    io = AtomicCheckpointIO(asynchronous=True)
    io.save_checkpoint(tied_checkpoint(), failing)
    io.after_save(failing, link_or_copy, failing, tmp_path / "last.ckpt")  # would fail: no step_2 to link
    gate.set()
    with pytest.raises(FlightMindError, match=r"cannot write checkpoint .*step_2.ckpt"):
        io.wait()
    io.wait()  # nothing else to report: the link was skipped, not run on a missing file
    assert not (tmp_path / "last.ckpt").exists()
    io.save_checkpoint(tied_checkpoint(), saved)
    io.after_save(saved, link_or_copy, saved, tmp_path / "last.ckpt")
    io.teardown()
    assert os.path.samefile(tmp_path / "last.ckpt", saved)
