"""Checkpoints that a run killed at any moment never resumes from half-written.

A checkpoint is written as ``checkpoints/step_00000500.partial/`` (Accelerate's ``save_state`` plus the
trainer state and the best weights so far), closed by ``manifest.json`` with the SHA-256 of every file,
then renamed to ``step_00000500/`` in one atomic step. Old checkpoints are renamed to ``*.deleting``
before they are removed. Resuming takes the newest directory with a final name and refuses it, naming
the file, if any file is missing or differs from the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

__all__ = [
    "CheckpointError",
    "find_latest",
    "restore_rng_states",
    "save_rng_states",
    "verify",
    "write_manifest",
]

MANIFEST = "manifest.json"
STATE = "trainer_state.json"
_FINAL = re.compile(r"step_(\d{8})\Z")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the checkpoint and the file."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_manifest(directory: Path, step: int) -> None:
    """Hash every file of ``directory`` into its manifest (written last, atomically)."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        with path.open("rb") as f:
            os.fsync(f.fileno())
        files[str(path.relative_to(directory))] = _sha256(path)
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"step": step, "files": files}, indent=1))
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)


def finalize(partial: Path, final: Path) -> None:
    """Rename a complete ``partial`` directory to ``final`` atomically (replacing an older ``final``)."""
    if final.exists():
        retired = final.with_name(final.name + ".deleting")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(final, retired)
        os.replace(partial, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(partial, final)
    _fsync_dir(final.parent)


def complete_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories with final names, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _FINAL.match(p.name))]
    return [p for _, p in sorted(found)]


def rotate(root: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` checkpoints (``keep = 0`` keeps all); also stale partial ones."""
    for stale in root.glob("*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob("*.deleting"):
        shutil.rmtree(stale, ignore_errors=True)
    checkpoints = complete_checkpoints(root)
    for old in checkpoints[: max(0, len(checkpoints) - keep)] if keep else []:
        retired = old.with_name(old.name + ".deleting")
        os.replace(old, retired)
        shutil.rmtree(retired, ignore_errors=True)


def _recovery(directory: Path) -> str:
    """What to do about an unusable checkpoint: the next-newest one is the fallback."""
    return (
        f"to recover, delete {directory} and --resume again (it continues from the previous checkpoint, "
        "if any), or start over with --overwrite_output_dir"
    )


def verify(directory: Path) -> dict:
    """The trainer state of a checkpoint after checking every file against the manifest; every refusal
    says how to recover."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(
            f"checkpoint: {directory} has no {MANIFEST}; it was not completely written; "
            f"{_recovery(directory)}"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint: {manifest_path} is unreadable ({err}); {_recovery(directory)}"
        ) from None
    for name, digest in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(
                f"checkpoint: {path} is missing; the checkpoint is incomplete; {_recovery(directory)}"
            )
        if _sha256(path) != digest:
            raise CheckpointError(
                f"checkpoint: {path} does not match its manifest (truncated or corrupt); "
                f"{_recovery(directory)}"
            )
    if STATE not in files:
        raise CheckpointError(f"checkpoint: {directory} has no {STATE}; {_recovery(directory)}")
    return json.loads((directory / STATE).read_text())


def find_latest(root: Path) -> Path | None:
    """The newest complete checkpoint directory under ``root``, or None."""
    checkpoints = complete_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def save_rng_states(directory: Path, process_index: int) -> None:
    """This process's random states (Python, NumPy, torch, CUDA) as ``rng_<process>.pt``, for checkpoints
    that Accelerate's ``save_state`` does not write (sharded runs)."""
    import random

    import numpy as np
    import torch

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(states, Path(directory) / f"rng_{process_index}.pt")


def restore_rng_states(directory: Path, process_index: int) -> None:
    """Restore what `save_rng_states` wrote for this process."""
    import random

    import numpy as np
    import torch

    states = torch.load(Path(directory) / f"rng_{process_index}.pt", weights_only=False)
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
