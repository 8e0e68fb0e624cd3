"""Held-out items: ``flatkit train --holdout F`` reserves items of the data set that the trainer never sees, and
the analyses draw their bank from either side of that split (``--bank train|holdout``).

The rule (docs/training.md, "Held-out items"): ``F`` in (0, 0.5] holds out ``round(F · N)`` of the N items of the
data spec (at least one), an integer ``F >= 1`` holds out ``F`` items; at most half of the data. The items are the
first k of a permutation of ``range(N)`` drawn from a CPU generator seeded by ``--holdout-seed`` (default 0,
independent of ``--seed``, so runs of different seeds hold out the same items and their held-out losses are
measured on the same data). The checkpoint's config records the rule, the sorted indices and their sha256
(``RunConfig.holdout``); ``DIR/holdout.json`` holds the same.

A :class:`Split` is a data set restricted to one side of the split (``train``: the complement, in ascending
order; ``holdout``: the held-out items). :func:`bank_data` gives what :class:`flatkit.objective.Objective` draws
its bank from for a model and a ``--bank`` choice.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from flatkit.errors import UsageError

#: the two sides of a held-out split (``--bank``)
BANKS = ("train", "holdout")
#: at most this fraction of the data is held out
MAX_FRACTION = 0.5


def parse_holdout(value: Any, name: str = "holdout") -> float | int | None:
    """``--holdout``'s value: None (off), a fraction in (0, 0.5] (float) or a count >= 1 (int); anything else is a
    one-line UsageError naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise UsageError(f"{name} {value!r}: expected a fraction in (0, {MAX_FRACTION:g}] or a count of items >= 1")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if text.isdigit() else float(text)
        except ValueError:
            raise UsageError(f"{name} {text!r}: expected a fraction in (0, {MAX_FRACTION:g}] or a count of items "
                             ">= 1") from None
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise UsageError(f"{name} {value!r}: must be a fraction in (0, {MAX_FRACTION:g}] or a count of items >= 1")
    if v <= MAX_FRACTION:
        return v
    if v != int(v):
        raise UsageError(f"{name} {value!r}: a fraction must lie in (0, {MAX_FRACTION:g}]; a count must be a whole "
                         "number")
    return int(v)


def holdout_count(value: float | int, n_items: int, name: str = "holdout") -> int:
    """How many of ``n_items`` the rule ``value`` holds out (refused when more than half, or no item is left)."""
    k = int(value) if isinstance(value, int) else max(1, int(round(float(value) * n_items)))
    if k > n_items * MAX_FRACTION:
        raise UsageError(f"{name} {value}: would hold out {k} of the {n_items} items of the data; at most half "
                         "(use a smaller fraction or count)")
    return k


def holdout_indices(n_items: int, value: float | int, seed: int = 0) -> np.ndarray:
    """The held-out indices (sorted int64) of a data set of ``n_items`` under the rule ``value`` and ``seed``."""
    import torch

    k = holdout_count(value, n_items)
    g = torch.Generator(device="cpu").manual_seed(_seed(seed))
    perm = torch.randperm(int(n_items), generator=g)
    return np.sort(perm[:k].numpy().astype(np.int64))


def _seed(seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"flatkit-holdout:{int(seed)}".encode()).digest()[:8], "little") >> 1


def indices_sha256(indices: Any) -> str:
    """sha256 of the indices as little-endian int64 (what the record stores to identify a split)."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(indices, dtype="<i8")).tobytes()).hexdigest()


def holdout_record(spec: str, n_items: int, value: float | int, seed: int = 0) -> dict:
    """What a training run records of its held-out items (JSON-able): data spec, rule, seed, sizes, the sorted
    indices and their sha256."""
    idx = holdout_indices(n_items, value, seed)
    return {"data": spec, "rule": "fraction" if isinstance(value, float) else "count", "value": value,
            "seed": int(seed), "n_items": int(n_items), "n_holdout": int(idx.size), "indices": idx.tolist(),
            "sha256": indices_sha256(idx)}


def record_indices(record: dict) -> np.ndarray:
    """The held-out indices of a record, checked against its sha256 (a damaged record is refused)."""
    idx = np.asarray(record.get("indices") or [], dtype=np.int64)
    if indices_sha256(idx) != record.get("sha256"):
        raise UsageError(f"holdout: the recorded held-out indices do not match their sha256 ({record.get('data')})")
    return idx


class Split:
    """One side of a held-out split of a data set: ``Split(dataset, record, "train" | "holdout")``.

    Behaves like :class:`flatkit.data.Dataset` for the analyses (``len``, ``get``, ``uint8``, ``kind``,
    ``sample_shape``, ``spec``, ``fingerprint``): item ``i`` is item ``indices[i]`` of the data set."""

    def __init__(self, dataset: Any, record: dict, side: str) -> None:
        if side not in BANKS:
            raise UsageError(f"bank {side!r}: expected one of {', '.join(BANKS)}")
        if len(dataset) != int(record["n_items"]):
            raise UsageError(f"bank {side}: {record['data']} now holds {len(dataset)} items, but the run held items "
                             f"out of {record['n_items']}: the data changed since training")
        held = record_indices(record)
        if side == "holdout":
            self.indices = held
        else:
            keep = np.ones(len(dataset), dtype=bool)
            keep[held] = False
            self.indices = np.flatnonzero(keep).astype(np.int64)
        self.dataset, self.side, self.record = dataset, side, record
        self.spec = getattr(dataset, "spec", record["data"])
        self.kind = getattr(dataset, "kind", None)
        self.sample_shape = getattr(dataset, "sample_shape", None)
        labels = getattr(dataset, "labels", None)
        self.labels = None if labels is None else labels[self.indices]

    def __len__(self) -> int:
        return int(self.indices.size)

    def __repr__(self) -> str:
        return f"Split({self.spec!r}, {self.side}, n={len(self)} of {len(self.dataset)})"

    def _map(self, index: Any) -> np.ndarray:
        if hasattr(index, "detach"):
            index = index.detach().cpu().numpy()
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return self.indices[np.asarray(index) if not isinstance(index, slice) else index]

    def get(self, index: Any) -> Any:
        return self.dataset.get(self._map(index))

    def uint8(self, index: Any) -> np.ndarray:
        return self.dataset.uint8(self._map(index))

    def fingerprint(self) -> str:
        base = self.dataset.fingerprint() if hasattr(self.dataset, "fingerprint") else ""
        return hashlib.sha256(f"{base}|{self.side}|{self.record['sha256']}".encode()).hexdigest()[:16]


def run_holdout(run: Any) -> dict | None:
    """The held-out record of a model's checkpoint (None: trained without ``--holdout``, or not by flatkit)."""
    rec = getattr(getattr(run, "config", None), "holdout", None)
    return rec if isinstance(rec, dict) and rec.get("indices") is not None else None


def bank_data(run: Any, data: Any, bank: str = "train") -> Any:
    """What the bank of ``run`` is drawn from for ``--data`` ``data`` (None: the checkpoint's) and ``--bank``.

    ``train``: the items the trainer saw when the run held items out of this data, else the whole data (a run
    without ``--holdout``, or another data set). ``holdout``: the held-out items; refused (naming ``bank``) when the
    run held nothing out or ``data`` is another data set."""
    if bank not in BANKS:
        raise UsageError(f"bank {bank!r}: expected one of {', '.join(BANKS)}")
    rec = run_holdout(run)
    if data is not None and not isinstance(data, str):
        if bank == "holdout":
            raise UsageError("bank holdout: needs the data as a spec (a data set object has no held-out split)")
        return data
    if rec is None:
        if bank == "holdout":
            where = getattr(run, "path", None) or "the model"
            raise UsageError(f"bank holdout: {where} was trained without --holdout (no held-out items recorded)")
        return data
    if data is not None:
        from flatkit.data.spec import normalise_spec

        if normalise_spec(data) != rec["data"]:
            if bank == "holdout":
                raise UsageError(f"bank holdout: --data {data} is not the data the run held items out of "
                                 f"({rec['data']})")
            return data
    from flatkit.data import load_dataset

    return Split(load_dataset(rec["data"]), rec, bank)


def holdout_summary(record: dict | None) -> dict | None:
    """The record without its index list (what train.json and result metas show)."""
    if record is None:
        return None
    return {k: v for k, v in record.items() if k != "indices"}


def holdout_meta(runs: list, settings: Any) -> dict:
    """What a loss-based result records of the held-out split (``meta["holdout"]``): with ``--bank train`` and a
    first model trained with ``--holdout`` on the bank's data, L(θ) of every model on a bank of the held-out items
    drawn as the analysis bank is (same seed, loss and t bins; ``min(n_eval, held-out items)`` items), so it
    stands beside L(θ) on the bank; a model whose run held other items out gets None. Otherwise the reason there is
    no held-out loss. Keys: ``bank``, ``loss`` (per model, or None), ``n``, ``split`` (the record without its
    indices), ``reason``."""
    bank = getattr(settings, "bank", "train")
    out: dict = {"bank": bank, "loss": None, "n": None, "split": None, "reason": None}
    rec = run_holdout(runs[0]) if runs else None
    if bank == "holdout":
        out["split"] = holdout_summary(rec)
        out["reason"] = "the bank itself is drawn from the held-out items (--bank holdout): L(θ) is the held-out loss"
        return out
    if rec is None:
        out["reason"] = ("the model was trained without flatkit train --holdout" if getattr(runs[0], "path", None)
                         else "the model records no training data split")
        return out
    data = getattr(settings, "data", None)
    held = bank_data(runs[0], data, "train")
    if not isinstance(held, Split):
        out["reason"] = f"the bank's data ({data}) is not the data the run held items out of ({rec['data']})"
        return out
    held = Split(held.dataset, rec, "holdout")
    from flatkit.objective import Objective

    n = min(int(getattr(settings, "n_eval", 128)), len(held))
    obj = Objective(runs[0], data=held, n=n, seed=int(getattr(settings, "seed", 0)),
                         loss=getattr(settings, "loss", "auto"), batch_size=int(getattr(settings, "batch_size", 64)),
                         t_bins=getattr(settings, "per_timestep", None))
    losses = []
    for m, r in enumerate(runs):
        mine = run_holdout(r)
        if mine is None or mine.get("sha256") != rec["sha256"]:
            losses.append(None)  # its run held other items out (or none): this bank is not held out for it
            continue
        o = obj if m == 0 else obj.for_run(r)
        v = float(o.loss())
        losses.append(v if math.isfinite(v) else None)
    out.update(loss=losses, n=n, split=holdout_summary(rec))
    return out
