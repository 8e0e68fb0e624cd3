"""Parameter dicts as flat vectors, and random probe vectors drawn from explicit generators.

Every curvature routine works on flat vectors ``v ∈ R^N`` (the analysed parameters concatenated in the
order of ``obj.params``) and converts to parameter dicts only to call the model.
"""

from __future__ import annotations

import torch
from torch import Tensor

ParamDict = dict[str, Tensor]


def flatten(d: ParamDict) -> Tensor:
    """Concatenate the tensors of a parameter dict (in its key order) into one flat vector."""
    return torch.cat([t.reshape(-1) for t in d.values()])


def unflatten(vec: Tensor, like: ParamDict) -> ParamDict:
    """Split a flat vector (or a stack ``(k, N)`` of them) into a dict shaped like ``like``.

    A stacked input gives tensors with a leading dimension ``k`` (what ``torch.func.vmap`` expects).
    """
    lead = tuple(vec.shape[:-1])
    out: ParamDict = {}
    offset = 0
    for name, t in like.items():
        n = t.numel()
        out[name] = vec[..., offset : offset + n].reshape(lead + tuple(t.shape))
        offset += n
    if offset != vec.shape[-1]:
        raise ValueError(f"flat vector has {vec.shape[-1]} entries, the parameters {offset}")
    return out


def num_entries(d: ParamDict) -> int:
    """N, the number of scalar parameters in a dict."""
    return sum(t.numel() for t in d.values())


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded explicitly (probes are drawn on the CPU so they do not depend on the device)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def rademacher(
    shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype, device: torch.device | str
) -> Tensor:
    """Entries ±1 with probability 1/2 each (Hutchinson 1989)."""
    z = torch.randint(0, 2, shape, generator=generator, dtype=torch.int8)
    return (2 * z - 1).to(dtype=dtype, device=device)


def gaussian(
    shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype, device: torch.device | str
) -> Tensor:
    """Entries N(0, 1), drawn in float64 on the CPU then cast."""
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)


def probes(
    kind: str,
    shape: tuple[int, ...],
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device | str,
) -> Tensor:
    """Random probe vectors of the given kind ("rademacher" or "gaussian")."""
    if kind == "rademacher":
        return rademacher(shape, generator, dtype, device)
    if kind == "gaussian":
        return gaussian(shape, generator, dtype, device)
    from flatkit.errors import UsageError

    raise UsageError(f"probe: unknown kind {kind!r} (rademacher or gaussian)")
