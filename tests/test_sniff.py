"""flatkit.sniff and read_pt: files named by their bytes; safetensors accepted wherever a state dict is."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from flatkit.checkpoint import read_pt
from flatkit.errors import UsageError
from flatkit.sniff import sniff


def test_kinds(tmp_path):
    torch.save({"a": torch.ones(1)}, tmp_path / "z.pt")
    with open(tmp_path / "legacy.pt", "wb") as f:
        torch.save({"a": torch.ones(1)}, f, _use_new_zipfile_serialization=False)
    np.save(tmp_path / "a.npy", np.zeros(2))
    np.savez(tmp_path / "a.npz", x=np.zeros(2))
    (tmp_path / "t.txt").write_text("hello\n")
    (tmp_path / "j.json").write_text('{"a": 1}')
    (tmp_path / "h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(10))
    (tmp_path / "r").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "e").write_bytes(b"")
    got = {p: sniff(tmp_path / p) for p in ("z.pt", "legacy.pt", "a.npy", "a.npz", "t.txt", "j.json", "h5", "r", "e")}
    assert got == {"z.pt": "torch-zip", "legacy.pt": "pickle", "a.npy": "npy", "a.npz": "npz", "t.txt": "text",
                   "j.json": "json", "h5": "hdf5", "r": "unknown", "e": "empty"}


def test_safetensors_under_any_name(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    from flatkit.interop.weights import read_state_dict

    save_file({"w": torch.arange(3.0)}, tmp_path / "weights.pt")
    assert sniff(tmp_path / "weights.pt") == "safetensors"
    assert torch.equal(read_pt(tmp_path / "weights.pt")["w"], torch.arange(3.0))
    assert torch.equal(read_state_dict(tmp_path / "weights.pt")["w"], torch.arange(3.0))


def test_safetensors_checkpoint_loads_as_adm_state_dict(tmp_path, shared_ckpt):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    import flatkit

    run = flatkit.load(shared_ckpt())
    save_file({k: v.contiguous() for k, v in run.model.state_dict().items()}, tmp_path / "m.safetensors")
    try:
        r2 = flatkit.load(tmp_path / "m.safetensors")
    except UsageError as e:  # a state dict carries no configuration: a one-line request for flags, not a crash
        assert "m.safetensors" in str(e) and "\n" not in str(e)
    else:
        assert r2.num_params == run.num_params


@pytest.mark.parametrize("content,fragment", [
    (lambda p: np.save(p, np.zeros(2)), "NumPy .npy"),
    (lambda p: p.write_bytes(bytes(range(1, 64)) + b"\x00"), "not a format flatkit reads"),
    (lambda p: p.write_text("x = 1\n"), "a text file"),
])
def test_foreign_files_named_without_suggesting_trust(tmp_path, content, fragment):
    p = tmp_path / "f.pt"
    content(p)
    if p.with_suffix(".pt.npy").exists():
        os.replace(p.with_suffix(".pt.npy"), p)
    with pytest.raises(UsageError, match=fragment) as e:
        read_pt(p)
    assert "trust" not in str(e.value)
