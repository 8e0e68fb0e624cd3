"""The checkpoint format: weights_only loading, atomic writes, refusal of code-executing pickles."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from flatkit.checkpoint import atomic_torch_save, make_checkpoint, read_pt, save_checkpoint, select_weights
from flatkit.config import ModelConfig, RunConfig
from flatkit.errors import UsageError


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _ckpt():
    sd = {"w": torch.randn(3, 3), "b": torch.zeros(3)}
    return make_checkpoint(RunConfig(model=ModelConfig(arch="mlp")), {"raw": sd, "ema_0.999": sd, "swa": sd},
                           step=7, ema_rates=[0.999])


def test_round_trip_weights_only(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(_ckpt(), p)
    obj = torch.load(p, weights_only=True)  # the format's promise
    assert obj["format"] == "flatkit" and obj["step"] == 7
    assert select_weights(obj, "ema")[0] == "ema_0.999"
    assert select_weights(obj, "swa")[0] == "swa"
    with pytest.raises(UsageError, match="--weights nope"):
        select_weights(obj, "nope")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "c.pt"
    save_checkpoint(_ckpt(), p)
    before = p.read_bytes()

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"x": Unsaveable()}, p)
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_code_executing_pickle_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, p)
    with pytest.raises(UsageError, match="evil.pt: refusing to load.*trust"):
        read_pt(p)


@pytest.mark.parametrize("content", [b"", b"garbage not a checkpoint", None])
def test_empty_truncated_foreign(tmp_path, content):
    p = tmp_path / "bad.pt"
    if content is None:  # truncated real checkpoint
        save_checkpoint(_ckpt(), p)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    else:
        p.write_bytes(content)
    with pytest.raises(UsageError, match="bad.pt"):
        read_pt(p)


def test_missing_and_directory(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        read_pt(tmp_path / "nope.pt")
    with pytest.raises(UsageError, match="is a directory"):
        read_pt(tmp_path)


def test_plain_pickle_is_refused_without_trust(tmp_path):
    p = tmp_path / "plain.pkl"
    with open(p, "wb") as f:
        pickle.dump({"a": 1}, f)
    # an old-style pickle that is not a torch zip file: one line, naming the file
    with pytest.raises(UsageError, match="plain.pkl"):
        read_pt(p)


class Harmless:
    """A custom class: weights_only=True refuses it, trust=True unpickles it."""

    def __init__(self, v):
        self.v = v


def test_trust_option_allows_full_unpickle(tmp_path):
    p = tmp_path / "custom.pt"
    torch.save({"obj": Harmless(3), "w": torch.ones(2)}, p)
    with pytest.raises(UsageError, match="refusing to load"):
        read_pt(p)
    assert read_pt(p, trust=True)["obj"].v == 3
