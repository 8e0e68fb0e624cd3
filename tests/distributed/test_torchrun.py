"""Two CPU ranks (gloo) against one process: the torchrun commands of docs/scale.md run as written, and equal a
one-process run.

Tolerances, and why:
- landscape, perturb, sample: every grid point / direction / sample is computed by the same deterministic code on
  the same inputs (same blocks of grid points, same batches of samples), and gathered as float64 (or the float32
  samples) without arithmetic, so the results are compared for EQUALITY.
- hessian: each Hessian-vector product is a float64 sum over micro-batches of float32 terms; two ranks sum their
  own micro-batches and the all-reduce adds the two partial sums, a different order of the same float64
  additions. A float64 sum of a few float32 values is exact unless their exponents span more than 29 bits, so the
  product (cast back to float32) is the same bit for bit except in rare cases, and Lanczos / Hutch++ then see the
  same operator. We compare with a relative tolerance of 1e-10 (far below the float32 resolution, 6e-8, so a
  real difference in the operator would fail it; it only leaves room for float64 rounding of the sums).
- train: DDP averages gradients of the two half-batch means; one process takes the mean over the whole batch. The
  float32 sums differ in order (about 1e-7 relative per step), Adam passes that on; over 40 steps the losses stay
  within 1e-5 relative (measured: about 1e-7), while an unsynchronised SAM step changes them by far more.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flatkit.cli import main

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).parent / "torchrun"
ENV = dict(os.environ, OMP_NUM_THREADS="1", FLATKIT_THREADS="1", PYTHONPATH=str(REPO))
TIMEOUT = 300


def _section(title: str) -> str:
    text = (REPO / "docs" / "scale.md").read_text()
    section = text[text.index(f"## {title}\n"):]
    nxt = section.find("\n## ", 5)
    return section if nxt < 0 else section[:nxt]


def _doc_commands() -> list[str]:
    section = _section("Several processes and GPUs (torchrun)")
    return [ln.strip() for ln in section.splitlines() if ln.strip().startswith("torchrun ")]


def _two_machine_commands() -> list[str]:
    """The ``torchrun --nnodes 2 ...`` lines of docs/scale.md's "Several machines" section."""
    section = _section("Several machines (torchrun rendezvous, Slurm)")
    return [ln.strip() for ln in section.splitlines() if ln.strip().startswith("torchrun --nnodes 2 ")]


def _one_machine_launcher(cmd: str, port: int) -> list[str]:
    """The launcher options of a two-machine line for this one machine: --nnodes 1 --nproc-per-node 2 and the
    endpoint localhost:PORT, the same c10d rendezvous otherwise."""
    words = cmd.split()
    launcher = words[1:words.index("-m")]
    opts = dict(zip(launcher[::2], launcher[1::2], strict=True))
    assert opts["--rdzv-backend"] == "c10d" and opts["--rdzv-endpoint"] == "HEAD:29500", cmd
    opts.update({"--nnodes": "1", "--nproc-per-node": "2", "--rdzv-endpoint": f"localhost:{port}"})
    return [w for kv in opts.items() for w in kv]


def _args_of(cmd: str) -> list[str]:
    """The flatkit arguments of a ``torchrun ... -m flatkit.cli ARGS`` line."""
    words = cmd.split()
    return words[words.index("flatkit.cli") + 1:]


@pytest.fixture(scope="module")
def work(tmp_path_factory, make_ckpt) -> Path:
    """A folder holding ``ckpt.pt``: a 2-D MLP denoiser, every weight moved off its init."""
    d = tmp_path_factory.mktemp("dist")
    make_ckpt(d / "ckpt.pt", "mlp", data="builtin:gaussians2d")
    return d


def _torchrun(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    assert cmd.startswith("torchrun ")
    argv = [str(TORCHRUN), *cmd.split()[1:]]
    return subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)


def _one_process(args: list[str], cwd: Path, out: str) -> None:
    args = list(args)
    args[args.index("--out") + 1] = out
    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(main, args)
    finally:
        os.chdir(old)
    assert r.exit_code == 0, r.output


def _out(args: list[str]) -> str:
    return args[args.index("--out") + 1]


def _losses(path: Path) -> np.ndarray:
    return np.array([json.loads(ln)["loss"] for ln in path.read_text().splitlines()])


def test_doc_commands_equal_one_process(work):
    cmds = _doc_commands()
    assert [_args_of(c)[0] for c in cmds] == ["landscape", "hessian", "sample", "train"]
    for cmd in cmds:
        r = _torchrun(cmd, work)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        args = _args_of(cmd)
        one = _out(args) + "-one"
        _one_process(args, work, one)
        two, one = work / _out(args), work / one
        kind = args[0]
        if kind == "landscape":
            a, b = np.load(one / "landscape.npz"), np.load(two / "landscape.npz")
            assert b["done"].all() and np.array_equal(a["values"], b["values"])
            assert (two / "landscape.png").is_file() and (two / "landscape.html").is_file()
            assert json.loads((two / "landscape.json").read_text())["meta"]["ranks"] == 2
        elif kind == "hessian":
            from flatkit.analyses.hessian import HessianResult

            ha, hb = HessianResult.load(one), HessianResult.load(two)
            assert ha.eigen_hvps == hb.eigen_hvps
            # float32 products summed over two ranks' shards in another order than one process sums them: the
            # eigenvalues agree to float32 rounding carried through the Lanczos steps (seen: 1.5e-8 relative)
            np.testing.assert_allclose(hb.eigenvalues, ha.eigenvalues, rtol=1e-6, atol=0)
            assert ha.trace_hvps == hb.trace_hvps
            np.testing.assert_allclose(hb.trace, ha.trace, rtol=1e-6, atol=0)
            # one probe's v·Hv is a float32 sum with cancellation: compare on the scale of the largest sample
            scale = float(np.abs(np.asarray(ha.trace_samples)).max())
            np.testing.assert_allclose(hb.trace_samples, ha.trace_samples, rtol=1e-5, atol=1e-5 * scale)
        elif kind == "sample":
            a, b = np.load(one / "samples.npz")["arr_0"], np.load(two / "samples.npz")["arr_0"]
            assert a.shape == (64, 2) and np.array_equal(a, b)
        else:
            la, lb = _losses(one / "metrics.jsonl"), _losses(two / "metrics.jsonl")
            assert la.shape == lb.shape == (40,)
            np.testing.assert_allclose(lb, la, rtol=1e-5)
            assert (two / "ckpt.pt").is_file()
        # rank 0 alone wrote: one "wrote" line per file, not two
        written = [ln for ln in r.stdout.splitlines() if ln.startswith("wrote ")]
        assert len(written) == len(set(written)) > 0, r.stdout


def test_perturb_resume_and_plain_training_in_one_launch(work, tmp_path):
    """The two-machine landscape and hessian lines of docs/scale.md, perturb, a resumed landscape and plain /
    unsynchronised-SAM training: two ranks in one process group, launched with the c10d rendezvous of the
    two-machine form (--nnodes 1 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint localhost:PORT)."""
    multi = _two_machine_commands()
    assert [_args_of(c)[0] for c in multi] == ["landscape", "hessian", "train"]
    doc_land, doc_hess = _args_of(multi[0]), _args_of(multi[1])
    base = ["--data", "builtin:gaussians2d", "--preset", "mlp", "--batch-size", "64", "--steps", "40",
            "--log-every", "1", "--samples", "0"]
    perturb = ["perturb", "ckpt.pt", "--mode", "vmap", "--n-directions", "4", "--worst-steps", "2"]
    land = ["landscape", "ckpt.pt", "--mode", "vmap", "--points", "9", "--batch-points", "4"]
    runs = {
        "perturb": perturb + ["--out", "runs/perturb-2"],
        "resume": land + ["--out", "runs/resume-2", "--resume"],
        "plain": ["train", *base, "--out", "runs/plain-2"],
        "nosync": ["train", *base, "--sam-rho", "0.05", "--no-sam-sync", "--out", "runs/nosync-2"],
        "doc-landscape": doc_land,
        "doc-hessian": doc_hess,
    }
    _one_process(doc_land, work, "runs/doc-landscape-1")
    _one_process(doc_hess, work, "runs/doc-hessian-1")
    # one-process references, and a half-finished grid for the two ranks to resume
    _one_process(perturb + ["--out", "x"], work, "runs/perturb-1")
    _one_process(land + ["--out", "x"], work, "runs/land-1")
    _one_process(runs["plain"], work, "runs/plain-1")
    _one_process(["train", *base, "--sam-rho", "0.05", "--out", "x"], work, "runs/sam-1")
    part = work / "runs" / "resume-2"
    part.mkdir(parents=True)
    shutil.copy(work / "runs" / "land-1" / "landscape.json", part / "landscape.json")
    z = dict(np.load(work / "runs" / "land-1" / "landscape.npz"))
    flat_done = z["done"].reshape(-1)
    flat_done[40:] = False  # blocks of 4 points: 10 blocks done, the rest (incl. a 1-point block) to do
    z["values"].reshape(-1)[40:] = np.nan
    np.savez(part / "landscape.npz", **z)

    (tmp_path / "args.json").write_text(json.dumps(list(runs.values())))
    argv = [str(TORCHRUN), *_one_machine_launcher(multi[0], _free_port()), str(Path(__file__).parent / "_launch.py"),
            str(tmp_path / "codes.json"), str(tmp_path / "args.json")]
    r = subprocess.run(argv, cwd=work, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    codes = json.loads((tmp_path / "codes.json").read_text())
    assert codes == [0] * len(runs), f"{list(zip(runs, codes, strict=False))}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"

    a, b = np.load(work / "runs/doc-landscape-1/landscape.npz"), np.load(work / _out(doc_land) / "landscape.npz")
    assert b["done"].all() and np.array_equal(a["values"], b["values"])
    from flatkit.analyses.hessian import HessianResult

    ha, hb = HessianResult.load(work / "runs/doc-hessian-1"), HessianResult.load(work / _out(doc_hess))
    assert ha.eigen_hvps == hb.eigen_hvps and len(ha.eigenvalues[0]) == 3
    np.testing.assert_allclose(hb.eigenvalues, ha.eigenvalues, rtol=1e-10, atol=0)

    a, b = np.load(work / "runs/perturb-1/perturb.npz"), np.load(work / "runs/perturb-2/perturb.npz")
    for k in ("deltas", "mean", "std", "worst"):
        assert np.array_equal(a[k], b[k]), k
    a, b = np.load(work / "runs/land-1/landscape.npz"), np.load(work / "runs/resume-2/landscape.npz")
    assert b["done"].all() and np.array_equal(a["values"], b["values"])
    la, lb = _losses(work / "runs/plain-1/metrics.jsonl"), _losses(work / "runs/plain-2/metrics.jsonl")
    np.testing.assert_allclose(lb, la, rtol=1e-5)
    # per-rank SAM perturbations are a different algorithm: visibly off the one-process SAM curve
    ls, ln = _losses(work / "runs/sam-1/metrics.jsonl"), _losses(work / "runs/nosync-2/metrics.jsonl")
    assert ls[0] == pytest.approx(ln[0], rel=1e-6)  # step 1's loss is taken before any update
    assert np.max(np.abs(ln - ls) / np.abs(ls)) > 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_that_disagree_exit_2_with_one_line(work):
    """Two ranks launched by hand (as torchrun would), rank 1 with another --seed."""
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = dict(ENV, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", RANK=str(rank),
                   LOCAL_RANK=str(rank))
        args = [sys.executable, "-m", "flatkit.cli", "perturb", "ckpt.pt", "--n-directions", "2", "--seed", str(rank),
                "--out", "runs/disagree"]
        procs.append(subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    for p in procs:
        out, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 2, out + err
        lines = [ln for ln in (out + err).splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in err, out + err
        assert re.search(r"ranks disagree .*--seed 1 on rank 1, 0 on rank 0", lines[0]), lines[0]
    assert not (work / "runs" / "disagree").exists()


def test_one_process_helpers_are_no_ops():
    from flatkit import distributed as dist

    assert not dist.active() and dist.world() == 1 and dist.rank() == 0 and dist.is_main()
    assert dist.shard(range(5)) == [0, 1, 2, 3, 4]
    assert dist.batch_shard(5, 2) == [0, 1, 2, 3, 4]
    assert dist.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert dist.gather_objects(3) == [3] and dist.broadcast_object(7) == 7
    t = torch.ones(3, dtype=torch.float64)
    assert dist.all_reduce_sum(t) is t and t.sum() == 3
    assert dist.run_on_main(lambda: 42) == 42
    dist.check_agreement({"seed": 0}, "x")
    dist.barrier()
    sh = dist.TrainSharding(5)
    batch = object()
    assert not sh.enabled and sh.local(batch) is batch and sh.gather(batch, None) is batch


def _slurm_scripts() -> list[str]:
    section = _section("Several machines (torchrun rendezvous, Slurm)")
    return [body for body in re.findall(r"^```bash\n(.*?)^```", section, flags=re.M | re.S)
            if body.startswith("#!/bin/bash")]


def test_slurm_scripts_are_valid_bash_with_known_options():
    """docs/scale.md's sbatch scripts: bash -n passes, each srun runs torchrun with the c10d rendezvous on the
    first node, and every option of its flatkit command exists (the commands parse as written)."""
    from flatkit.cli import main as cli

    scripts = _slurm_scripts()
    assert len(scripts) == 2
    seen = []
    for body in scripts:
        assert "#SBATCH --nodes=2" in body and "#SBATCH --ntasks-per-node=1" in body
        r = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        for cmd in body.replace("\\\n", " ").splitlines():
            if not cmd.startswith("srun "):
                continue
            words = shlex.split(cmd)
            assert words[1] == "torchrun" and words[words.index("--rdzv-backend") + 1] == "c10d"
            assert words[words.index("--rdzv-endpoint") + 1].startswith("$HEAD:")
            args = [w for w in words[words.index("flatkit.cli") + 1:] if not w.startswith("${")]
            _check_options(cli, args)
            seen.append(args[0])
    assert seen == ["train", "landscape", "hessian"]
    for cmd in _two_machine_commands():  # the train line too (the test above runs landscape and hessian)
        _check_options(cli, _args_of(cmd))


def _check_options(cli, args: list[str]) -> None:
    command = cli.get_command(None, args[0])
    known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    unknown = [w for w in args if w.startswith("--") and w not in known]
    assert not unknown, (args[0], unknown)
    command.make_context(args[0], [a.replace("$", "") for a in args[1:]])  # values convert


def test_auto_batching_takes_one_decision_on_every_rank(tmp_path):
    """Ranks time the loop and the vmapped pass differently (and one rank's vmapped pass fails): every rank
    still takes rank 0's decision, so no collective mismatches, and the products equal one process's."""
    from flatkit.curvature.hvp import HVP
    from tests.distributed._calibrate_ranks import objective

    out = tmp_path / "ranks.json"
    script = REPO / "tests" / "distributed" / "_calibrate_ranks.py"
    argv = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(script), str(out)]
    r = subprocess.run(argv, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [x["chosen"] for x in rows] == ["loop", "loop"]  # rank 0 timed the loop faster
    assert rows[0]["batch"] == rows[1]["batch"] == "loop"
    assert rows[0]["count"] == rows[1]["count"] == 8
    assert rows[0]["batch2"] == rows[1]["batch2"] == "loop"  # failed on rank 1: both fall back
    assert rows[1]["failed2"].startswith("RuntimeError") and "another rank" in rows[0]["failed2"]
    V = torch.randn(8, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = HVP(objective(), batch="loop").many(V)
    for x in rows:
        np.testing.assert_allclose(np.array(x["H"]), want.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.array(x["H2"]), want.numpy(), rtol=1e-12, atol=1e-12)
