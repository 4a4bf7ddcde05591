"""Checkpoint directories: manifests, atomic completion, rotation, refusal of corrupt ones."""

from __future__ import annotations

import json

import pytest

from train import checkpoint as ckpt


def make(root, step, files=None):
    directory = root / f"{ckpt.checkpoint_name(step)}.partial"
    directory.mkdir(parents=True)
    files = files or {"model.safetensors": b"weights" * 100, "nested/optimizer.bin": b"moments"}
    for name, content in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(content)
    (directory / ckpt.STATE).write_text(json.dumps({"global_step": step}))
    ckpt.write_manifest(directory, step)
    final = root / ckpt.checkpoint_name(step)
    ckpt.finalize(directory, final)
    return final


def test_manifest_round_trip(tmp_path):
    final = make(tmp_path, 20)
    assert not (tmp_path / "step_00000020.partial").exists()
    assert ckpt.verify(final) == {"global_step": 20}
    manifest = json.loads((final / ckpt.MANIFEST).read_text())
    assert set(manifest["files"]) == {"model.safetensors", "nested/optimizer.bin", ckpt.STATE}


def test_truncated_missing_or_unfinished_files_are_refused(tmp_path):
    truncated = make(tmp_path, 10)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-3])
    with pytest.raises(ckpt.CheckpointError, match=r"model.safetensors does not match its manifest"):
        ckpt.verify(truncated)
    missing = make(tmp_path, 20)
    (missing / "nested" / "optimizer.bin").unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"optimizer.bin is missing"):
        ckpt.verify(missing)
    unfinished = make(tmp_path, 30)
    (unfinished / ckpt.MANIFEST).unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"has no manifest.json; it was not completely written"):
        ckpt.verify(unfinished)


def test_latest_ignores_partial_and_deleting_directories(tmp_path):
    make(tmp_path, 10)
    make(tmp_path, 30)
    (tmp_path / "step_00000040.partial").mkdir()  # a run killed while writing
    (tmp_path / "step_00000050.deleting").mkdir()  # a run killed while rotating
    assert ckpt.find_latest(tmp_path).name == "step_00000030"
    assert ckpt.find_latest(tmp_path / "nothing") is None


def test_rotation_keeps_the_newest_and_clears_leftovers(tmp_path):
    for step in (10, 20, 30):
        make(tmp_path, step)
    (tmp_path / "step_00000040.partial").mkdir()
    ckpt.rotate(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000020", "step_00000030"]
    ckpt.rotate(tmp_path, keep=0)  # 0 keeps everything
    assert len(list(tmp_path.iterdir())) == 2


def test_finalize_replaces_an_older_checkpoint_of_the_same_step(tmp_path):
    make(tmp_path, 10, {"a": b"old"})
    final = make(tmp_path, 10, {"a": b"new"})
    assert (final / "a").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000010"]
