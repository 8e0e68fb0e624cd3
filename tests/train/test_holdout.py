"""``flatkit train --holdout``: held-out items are never drawn into a training batch, they are recorded in the
checkpoint and DIR/holdout.json, and the choice is reproducible (by --holdout-seed, not by --seed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import flatkit.data
from flatkit.data.holdout import Split, bank_data, holdout_indices, holdout_record, indices_sha256, parse_holdout
from flatkit.errors import UsageError
from flatkit.train.trainer import TrainConfig, train

CFG = TrainConfig(data="builtin:gaussians2d?n=40", preset="mlp", steps=12, batch_size=8, ema=[0.9], log_every=4,
                  save_every=6, sample_count=0, holdout=0.25)


class _Recording:
    """A data set that records every index the trainer asks for."""

    def __init__(self, ds):
        self.ds, self.seen = ds, []
        self.kind, self.sample_shape, self.spec, self.labels = ds.kind, ds.sample_shape, ds.spec, ds.labels

    def __len__(self):
        return len(self.ds)

    def get(self, index):
        self.seen.extend(np.asarray(index).ravel().tolist())
        return self.ds.get(index)


def test_holdout_items_never_reach_a_training_batch(tmp_path, monkeypatch):
    real = flatkit.data.load_dataset
    rec: list[_Recording] = []

    def loading(spec, **kw):
        rec.append(_Recording(real(spec, **kw)))
        return rec[-1]

    monkeypatch.setattr(flatkit.data, "load_dataset", loading)
    train(CFG, tmp_path / "r", progress=False)
    held = set(json.loads((tmp_path / "r" / "holdout.json").read_text())["indices"])
    seen = set(rec[0].seen)
    assert len(held) == 10 and len(seen) > 0
    assert not held & seen  # 12 steps x 8 = 96 draws over the 30 training items: none held out
    assert seen == set(range(40)) - held  # every training item was drawn (3+ epochs)


def test_holdout_recorded_and_reproducible(tmp_path):
    import flatkit

    a = train(CFG, tmp_path / "a", progress=False)
    b = train(TrainConfig(**{**CFG.__dict__, "seed": 3}), tmp_path / "b", progress=False)
    ra, rb = flatkit.load(a).config.holdout, flatkit.load(b).config.holdout
    on_disk = json.loads((tmp_path / "a" / "holdout.json").read_text())
    assert ra == on_disk
    assert ra["indices"] == holdout_indices(40, 0.25, 0).tolist()  # the rule alone gives the same items
    assert ra["indices"] == rb["indices"]  # independent of --seed
    assert ra["sha256"] == indices_sha256(ra["indices"]) and ra["n_holdout"] == 10 and ra["n_items"] == 40
    tj = json.loads((tmp_path / "a" / "train.json").read_text())
    assert tj["holdout"]["sha256"] == ra["sha256"] and "indices" not in tj["holdout"]
    assert holdout_indices(40, 0.25, 1).tolist() != ra["indices"]  # --holdout-seed picks other items
    assert holdout_indices(40, 7, 0).size == 7


def test_resume_keeps_the_split_and_refuses_a_change(tmp_path):
    train(TrainConfig(**{**CFG.__dict__, "steps": 6}), tmp_path / "r", progress=False)
    train(CFG, tmp_path / "r", resume=True, progress=False)
    with pytest.raises(UsageError, match="holdout"):
        train(TrainConfig(**{**CFG.__dict__, "steps": 18, "holdout": 0.1}), tmp_path / "r", resume=True,
              progress=False)


@pytest.mark.parametrize("value", [0, -1, 0.6, 1.5, "abc", float("nan"), True])
def test_bad_holdout_values(value):
    with pytest.raises(UsageError, match="holdout"):
        parse_holdout(value)


def test_holdout_of_more_than_half_is_refused(tmp_path):
    with pytest.raises(UsageError, match="at most half"):
        train(TrainConfig(**{**CFG.__dict__, "holdout": 21}), tmp_path / "r", progress=False)


def test_bank_data_sides(tmp_path):
    import flatkit

    run = flatkit.load(train(CFG, tmp_path / "r", progress=False))
    held = set(run.config.holdout["indices"])
    tr, ho = bank_data(run, None, "train"), bank_data(run, None, "holdout")
    assert isinstance(tr, Split) and len(tr) == 30 and len(ho) == 10
    assert set(ho.indices.tolist()) == held and not held & set(tr.indices.tolist())
    full = flatkit.data.load_dataset(CFG.data)
    np.testing.assert_array_equal(ho.get([0, 3]).numpy(), full.get(ho.indices[[0, 3]]).numpy())
    assert bank_data(run, "builtin:swissroll", "train") == "builtin:swissroll"  # another data set: all of it
    with pytest.raises(UsageError, match="bank holdout"):
        bank_data(run, "builtin:swissroll", "holdout")
    rec = holdout_record(CFG.data, 40, 0.25)
    with pytest.raises(UsageError, match="changed"):
        Split(flatkit.data.load_dataset("builtin:gaussians2d?n=50"), rec, "holdout")
