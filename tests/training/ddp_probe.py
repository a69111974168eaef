"""What each DDP rank did, for tests/training/test_ddp.py.

As a callback (``--trainer.callbacks+=tests.training.ddp_probe.RankProbe``) it records, per
micro-batch, the windows this rank trained on, how many gradient all-reduces ran (a DDP
communication hook counts them) and, with ``$FLIGHTMIND_PROBE_READS`` set, the device reads and
barriers (see device_reads.py), and writes ``rank{R}.json`` into ``$FLIGHTMIND_PROBE_DIR``.

As a script it is ``flightmind`` run from ``$FLIGHTMIND_RANK_DIRS/rank{LOCAL_RANK}``: every rank gets
its own working directory, so the files a rank writes through relative paths (checkpoints, logs)
land in its own directory, and a rank that writes nothing leaves its directory empty.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/training/ddp_probe.py fit -c …
    python tests/training/ddp_probe.py fit -c … --trainer.devices 2

``launch`` runs such a command as the tests do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

REPO = Path(__file__).resolve().parents[2]
LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__],
    "flightmind fit, devices 2": [sys.executable, __file__],
}
ALLREDUCES = 0
READS: list[str] | None = None  # the device reads of this rank, when recorded


def counting_allreduce_hook(state, bucket):
    global ALLREDUCES
    ALLREDUCES += 1
    return default_hooks.allreduce_hook(state, bucket)


class RankProbe(L.Callback):
    def __init__(self) -> None:
        from tests.training.device_reads import ReadsPerMicroBatch

        self.rows: list[list[list[int]]] = []
        self.allreduces: list[int] = []
        self.reads = ReadsPerMicroBatch(READS) if READS is not None else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registers DDP communication hooks on CUDA only; on CPU (gloo) register it here.
        if isinstance(trainer.strategy.model, DistributedDataParallel):
            trainer.strategy.model.register_comm_hook(None, counting_allreduce_hook)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.reads is not None:
            self.reads.on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self._before = ALLREDUCES
        seen = len(READS) if READS is not None else 0
        self.rows.append(batch.tolist())
        if READS is not None:
            del READS[seen:]  # the probe's own read

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.allreduces.append(ALLREDUCES - self._before)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = {"world_size": trainer.world_size, "rows": self.rows, "allreduces": self.allreduces}
        if self.reads is not None:
            self.reads.on_train_end(trainer, pl_module)
            record["reads"] = [self.reads.per_batch[i] for i in range(len(self.rows))]
        out = Path(os.environ["FLIGHTMIND_PROBE_DIR"]) / f"rank{trainer.global_rank}.json"
        out.write_text(json.dumps(record))


def launch(command: list[str], cwd: Path, timeout: int = 300, **env: str) -> str:
    """Run a multi-process command from cwd with this checkout on the path; its output. A hang or a
    failure fails the test (the process group is killed on timeout)."""
    keep = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env = {
        **keep,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "FLIGHTMIND_RANK_DIRS": str(cwd),
        "FLIGHTMIND_PROBE_DIR": str(cwd / "probe"),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **env,
    }
    (cwd / "probe").mkdir()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the DDP run did not finish in {timeout} s:\n{output[-3000:]}")
    assert process.returncode == 0, output[-4000:]
    return output


if __name__ == "__main__":
    if os.environ.get("FLIGHTMIND_PROBE_READS"):
        # Into the module the CLI imports RankProbe from (this script runs as __main__).
        import tests.training.ddp_probe as probe
        from tests.training.device_reads import record_reads

        probe.READS = record_reads()
    rank_dir = Path(os.environ["FLIGHTMIND_RANK_DIRS"]) / f"rank{os.environ.get('LOCAL_RANK', '0')}"
    rank_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(rank_dir)
    from flightmind.cli import main

    sys.exit(main())
