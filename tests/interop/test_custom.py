"""Any torch model: flatkit.Task and ``--model module:factory [--weights FILE]`` on the analysis commands."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.nn import functional as F

import flatkit
from flatkit.analyses.hessian import HessianResult
from flatkit.analyses.sharpness import SharpnessResult
from flatkit.cli import main
from flatkit.errors import UsageError


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, *needles):
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in lines[0], lines[0]


FACTORIES = '''
import torch
from torch import nn
from torch.nn import functional as F

import flatkit


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=g)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]])


def make_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))


def make_task():
    x, y = data()
    return flatkit.Task(model=make_net(), loss=lambda out, b: F.mse_loss(out, b[1]), batches=[(x[:16], y[:16]),
                        (x[16:], y[16:])])


class Denoiser(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x, t):
        return self.conv(x) * self.scale + 1e-3 * t.float()[:, None, None, None]


def make_denoiser():
    torch.manual_seed(0)
    return Denoiser()


def make_nothing():
    return 42


def make_broken():
    raise ValueError("no GPU here")
'''


@pytest.fixture
def factories(tmp_path, monkeypatch):
    """A module ``userfacts`` in a fresh current directory (importable as userfacts:... and userfacts.py:...)."""
    (tmp_path / "userfacts.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("userfacts", None)
    yield tmp_path
    sys.modules.pop("userfacts", None)


def full_hessian(obj) -> torch.Tensor:
    names = list(obj.params)
    shapes, sizes = [obj.params[k].shape for k in names], [obj.params[k].numel() for k in names]

    def loss(flat):
        p = {k: v.reshape(s) for k, v, s in zip(names, torch.split(flat, sizes), shapes, strict=True)}
        return sum(obj.batch_loss(p, i) for i in range(obj.n_batches))

    return torch.func.hessian(loss)(torch.cat([obj.params[k].reshape(-1) for k in names]))


# ------------------------------------------------------------------------------------------------- the Task


def test_task_objective_is_the_mean_batch_loss_and_its_hessian_matches_torch_func():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Dropout(0.5), nn.Linear(5, 2)).double().train()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 2, (20,))
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]
    task = flatkit.Task(model=model, loss=lambda out, b: F.cross_entropy(out, b[1]), batches=batches)
    obj = task.objective()
    assert list(obj.params) == [k for k, _ in model.named_parameters()]
    model.eval()
    with torch.no_grad():
        expect = (F.cross_entropy(model(x[:8]), y[:8]) + F.cross_entropy(model(x[8:]), y[8:])) / 2
    assert abs(float(obj.loss()) - float(expect)) < 1e-12
    model.train()
    obj.check_determinism()  # eval mode inside the objective: dropout off although the caller's model trains
    assert model.training  # the caller's module keeps its mode
    H = full_hessian(obj)
    exact = torch.linalg.eigvalsh(H).flip(0)
    eig = flatkit.top_eigenvalues(obj, k=2, tol=1e-10)
    np.testing.assert_allclose(eig.eigenvalues, exact[:2].numpy(), rtol=1e-8)
    # include / exclude and a custom forward
    sub = flatkit.Task(model=model, loss=lambda out, b: F.cross_entropy(out, b[1]), batches=batches,
                       forward=lambda m, b: m(b[0] * 1.0)).objective(include="3.*")
    assert list(sub.params) == ["3.weight", "3.bias"] and abs(float(sub.loss()) - float(expect)) < 1e-12


def test_task_validation():
    m = nn.Linear(2, 1)
    with pytest.raises(UsageError, match="Task.model"):
        flatkit.Task(model="net", loss=F.mse_loss, batches=[1])
    with pytest.raises(UsageError, match="Task.batches"):
        flatkit.Task(model=m, loss=F.mse_loss, batches=[])
    with pytest.raises(UsageError, match="Task.batches"):
        flatkit.Task(model=m, loss=F.mse_loss, batches=torch.zeros(3, 2))


# ---------------------------------------------------------------------------------------- --model on the CLI


@pytest.mark.parametrize("spec", ["userfacts:make_task", "userfacts.py:make_task"])
def test_cli_hessian_on_a_task_with_weights(factories, spec):
    from userfacts import make_net

    net = make_net()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    torch.save(net.state_dict(), factories / "w.pt")
    r = run_cli("hessian", "--model", spec, "--weights", "w.pt", "--top-k", 2, "--trace", "--out", "h")
    assert r.exit_code == 0, r.output
    h = HessianResult.load(factories / "h")
    task = __import__("userfacts").make_task()
    task.model.load_state_dict(net.state_dict())
    obj = task.objective()
    exact = torch.linalg.eigvalsh(full_hessian(obj).double()).flip(0)
    np.testing.assert_allclose(h.eigenvalues[0], exact[:2].numpy(), rtol=1e-3)
    assert abs(h.loss[0] - float(obj.loss())) < 1e-6
    assert h.meta["checkpoints"][0]["weights"] == "w.pt" and h.meta["checkpoints"][0]["checkpoint"] == spec
    assert h.meta["run_config"]["source"] == "custom-task"
    # without --weights: the factory's own initialisation
    r = run_cli("sharpness", "--model", spec, "--out", "s")
    assert r.exit_code == 0, r.output
    s = SharpnessResult.load(factories / "s")
    assert abs(s.loss0[0] - float(__import__("userfacts").make_task().objective().loss())) < 1e-6


def test_cli_denoiser_factory_runs_as_a_diffusion(factories):
    r = run_cli("landscape", "--model", "userfacts:make_denoiser", "--data", "builtin:shapes16", "--n-eval", 4,
                "--dims", 1, "--points", 3, "--diffusion-steps", 100, "--noise-schedule", "cosine", "--out", "l")
    assert r.exit_code == 0, r.output
    res = json.loads((factories / "l" / "landscape.json").read_text())
    assert res["meta"]["run_config"]["diffusion"]["diffusion_steps"] == 100
    assert res["meta"]["run_config"]["diffusion"]["noise_schedule"] == "cosine"
    # the same loss as the Python API on the same run and bank
    from flatkit.interop.custom import load_custom

    run = load_custom("userfacts:make_denoiser", diffusion_steps=100, noise_schedule="cosine")
    obj = flatkit.Objective(run, data="builtin:shapes16", n=4, seed=0)
    assert abs(res["loss_centre"][0] - float(obj.loss())) < 1e-6
    r = run_cli("perturb", "--model", "userfacts:make_denoiser", "--data", "builtin:shapes16", "--n-eval", 4,
                "--n-directions", 2, "--radii", "0,0.1", "--worst-steps", 0, "--out", "p")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args,needles", [
    (["hessian", "--model", "nosuchmodule:f"], ["--model nosuchmodule:f", "no module named 'nosuchmodule'"]),
    (["hessian", "--model", "userfacts:nope"], ["--model userfacts:nope", "no attribute 'nope'"]),
    (["hessian", "--model", "userfacts"], ["--model userfacts", "MODULE:FACTORY"]),
    (["hessian", "--model", "userfacts:make_nothing"], ["--model userfacts:make_nothing", "returned int",
                                                        "nn.Module", "flatkit.Task"]),
    (["hessian", "--model", "userfacts:make_broken"], ["--model userfacts:make_broken", "ValueError: no GPU here"]),
    (["hessian", "--model", "missing.py:f"], ["--model missing.py:f", "no such file"]),
    (["hessian", "--model", "userfacts:make_task", "--weights", "nope.pt"], ["--weights nope.pt", "no such file"]),
    (["landscape", "--model", "userfacts:make_task", "--weights", "bad.pt"], ["--weights bad.pt",
                                                                              "weights do not match"]),
    (["sharpness", "--model", "userfacts:make_denoiser"], ["--data", "required with --model"]),
    (["sharpness", "--model", "userfacts:make_task", "--data", "builtin:shapes16"], ["--data", "Task"]),
    (["hessian", "x.pt", "--model", "userfacts:make_task"], ["--model", "not both"]),
    (["hessian", "--model", "userfacts:make_task", "--compare", "y.pt"], ["--compare", "--model"]),
    (["perturb"], ["CKPT", "--model"]),
    (["hessian", "x.pt", "--noise-schedule", "cosine"], ["--noise-schedule", "only with --model"]),
])
def test_cli_bad_model_input_is_one_line_exit_2(factories, args, needles):
    torch.save({"weight": torch.zeros(2, 2)}, factories / "bad.pt")
    one_line_error(run_cli(*args), *needles)


def test_weights_file_formats(factories, tmp_path):
    save_file = pytest.importorskip("safetensors.torch").save_file

    from userfacts import make_net

    from flatkit.interop.custom import load_custom

    net = make_net()
    sd = {k: v * 2 for k, v in net.state_dict().items()}
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "wrapped.pt")
    save_file(sd, str(tmp_path / "w.safetensors"))
    for f in ("wrapped.pt", "w.safetensors"):
        run = load_custom("userfacts:make_task", weights=str(tmp_path / f))
        assert all(torch.equal(run.model.state_dict()[k], v) for k, v in sd.items())
        assert run.sha256 is not None
