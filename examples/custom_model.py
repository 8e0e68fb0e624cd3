"""Flatness of any torch model through flatkit's Python API (docs/scale.md, "Analyse your own model").

Trains the small MLP classifier of ``custom_model_factory.py`` on synthetic data for a few seconds, then
measures its top Hessian eigenvalues, the Hessian trace and a 1-D loss landscape, and checks the top
eigenvalue and the trace against the full Hessian that ``torch.func.hessian`` computes in float64.

    python examples/custom_model.py [--steps N] [--save weights.pt] [--out DIR]

``--save`` writes the trained weights (a state dict) for ``flatkit hessian --model
examples/custom_model_factory.py:make_task --weights weights.pt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from custom_model_factory import make_task  # noqa: E402

import flatkit  # noqa: E402


def train(task: flatkit.Task, steps: int) -> float:
    """Full-batch Adam on the task's mean batch loss; returns the final loss."""
    opt = torch.optim.Adam(task.model.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(task.loss(task.model(x), (x, y)) for x, y in task.batches) / len(task.batches)
        loss.backward()
        opt.step()
    return float(loss.detach())


def full_hessian(obj) -> torch.Tensor:
    """The N x N Hessian of the objective in float64, by torch.func.hessian on the flattened parameters."""
    names = list(obj.params)
    shapes = [obj.params[k].shape for k in names]
    sizes = [obj.params[k].numel() for k in names]
    theta = torch.cat([obj.params[k].reshape(-1) for k in names])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        p = {k: v.reshape(s) for k, v, s in zip(names, parts, shapes, strict=True)}
        return sum(obj.batch_loss(p, i) for i in range(obj.n_batches))

    return torch.func.hessian(loss)(theta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps")
    ap.add_argument("--save", default=None, help="write the trained state dict here")
    ap.add_argument("--out", default=None, help="save the results (json + npz) into this folder")
    args = ap.parse_args()

    torch.manual_seed(0)
    task = make_task()
    task.model.double()  # float64, so that flatkit and the dense oracle agree to ~1e-10
    task.batches = [(x.double(), y) for x, y in task.batches]
    loss = train(task, args.steps)
    print(f"trained {args.steps} steps: loss {loss:.4f}")
    if args.save:
        torch.save({k: v.float() for k, v in task.model.state_dict().items()}, args.save)
        print(f"wrote {args.save}")

    obj = task.objective()  # Objective.from_function over the task's batches
    eig = flatkit.top_eigenvalues(obj, k=3, tol=1e-8)
    tr = flatkit.hessian_trace(obj, method="hutch++", max_hvps=obj.num_params, rtol=1e-3)
    ls = flatkit.landscape(obj, dims=1, points=21, span=1.0)
    print(f"{obj.num_params} parameters; top eigenvalues {', '.join(f'{v:.6f}' for v in eig.eigenvalues)}")
    print(f"trace {tr.estimate:.6f} ± {tr.stderr:.2g} ({tr.hvp_count} HVPs)")
    print("1-D landscape: " + " ".join(f"{v:.3f}" for v in ls.values[0]))

    H = full_hessian(obj)
    exact = torch.linalg.eigvalsh(H).flip(0)[:3].numpy()
    print(f"torch.func.hessian: top eigenvalues {', '.join(f'{v:.6f}' for v in exact)}, trace {H.trace():.6f}")
    assert abs(eig.eigenvalues[0] - exact[0]) <= 1e-6 * abs(exact[0]), (eig.eigenvalues, exact)
    assert abs(tr.estimate - float(H.trace())) <= 0.05 * abs(float(H.trace())), (tr.estimate, float(H.trace()))
    centre = ls.values[0][len(ls.values[0]) // 2]
    assert abs(centre - float(obj.loss())) < 1e-9 and ls.values[0].min() >= centre - 1e-3
    if args.out:
        for r in (eig, tr, ls):
            r.save(args.out)
        print(f"wrote {args.out}")
    print("ok: flatkit's top eigenvalue matches torch.func.hessian's")


if __name__ == "__main__":
    main()
