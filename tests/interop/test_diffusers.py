"""``flatkit.load`` on diffusers UNet2DModel directories: outputs, schedules and DDIM samples equal diffusers'
own; the analyses run on the CLI; bad directories are one line and exit 2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

import flatkit  # noqa: E402
from flatkit.cli import main  # noqa: E402
from flatkit.errors import UsageError  # noqa: E402
from flatkit.interop.diffusers import DDPM_DEFAULTS, diffusion_from_scheduler, scheduler_betas  # noqa: E402

# diffusers' import path calls torch.jit.script, which torch 2.13 deprecates (not flatkit's code)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

TINY = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 32), layers_per_block=1,
            norm_num_groups=8, attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def tiny_unet(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(**{**TINY, **overrides}).eval()


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory):
    """A model directory as save_pretrained writes it (config.json + safetensors), no scheduler config."""
    d = tmp_path_factory.mktemp("diffusers") / "unet"
    tiny_unet().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A pipeline directory: unet/ (weights as .bin) and scheduler/scheduler_config.json (scaled_linear, T=100)."""
    d = tmp_path_factory.mktemp("diffusers") / "pipe"
    tiny_unet(seed=1).save_pretrained(d / "unet", safe_serialization=False)
    diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear", beta_start=0.00085,
                            beta_end=0.012).save_pretrained(d / "scheduler")
    (d / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline", "unet": ["diffusers",
                                        "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"]}))
    return d


def reference(path):
    return diffusers.UNet2DModel.from_pretrained(path, low_cpu_mem_usage=False).eval()


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, *needles):
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------- (a) the model


@pytest.mark.parametrize("layout", ["model", "pipeline"])
def test_model_output_equals_diffusers(layout, unet_dir, pipeline_dir):
    path, ref_path = (unet_dir, unet_dir) if layout == "model" else (pipeline_dir, pipeline_dir / "unet")
    run = flatkit.load(path)
    ref = reference(ref_path)
    assert run.config.source == "diffusers"
    assert [k for k, _ in run.model.named_parameters()] == [k for k, _ in ref.named_parameters()]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 16, 16, generator=g)
    t = torch.tensor([0, 17, 99])
    with torch.no_grad():
        ours, theirs = run.model(x, t), ref(x, t).sample
    assert isinstance(ours, torch.Tensor) and ours.shape == x.shape
    # flatkit runs attention through the explicit (matmul + softmax) processor, diffusers through SDPA
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_schedules_equal_diffusers_betas():
    for kw in (dict(), dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
               dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=500),
               dict(beta_schedule="linear", num_train_timesteps=200, beta_start=0.001, beta_end=0.05)):
        sched = diffusers.DDPMScheduler(**kw)
        betas, _ = scheduler_betas(dict(sched.config), "scheduler_config.json")
        assert betas.dtype == np.float64
        np.testing.assert_allclose(betas, sched.betas.double().numpy(), rtol=1e-6, atol=1e-9)
    # the defaults flatkit assumes without a scheduler config are DDPMScheduler's
    cfg = diffusers.DDPMScheduler().config
    assert {k: cfg[k] for k in DDPM_DEFAULTS} == DDPM_DEFAULTS


def test_missing_scheduler_config_is_reported_as_assumed(unet_dir, pipeline_dir):
    run = flatkit.load(unet_dir)
    assert len(run.assumed) == 1 and "DDPMScheduler defaults" in run.assumed[0]
    assert run.diffusion.num_timesteps == 1000 and run.config.diffusion.noise_schedule == "linear"
    piped = flatkit.load(pipeline_dir)
    assert piped.assumed == [] and piped.diffusion.num_timesteps == 100
    assert piped.config.diffusion.noise_schedule.startswith("diffusers:scaled_linear")


# --------------------------------------------------------------------------------------------- (b) DDIM sample


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("layout,steps", [("model", 10), ("pipeline", 20)])
def test_ddim_sample_equals_diffusers_ddim_loop(layout, steps, clip, unet_dir, pipeline_dir):
    """flatkit's sampler (respacing "ddimN") against DDIMScheduler with timestep_spacing="leading",
    steps_offset=0, set_alpha_to_one=True: the same timesteps when N divides T. flatkit clips x0 and recomputes
    eps from the clipped x0 (ADM), which is diffusers' clip_sample=True with use_clipped_model_output=True."""
    from flatkit.sampling import SamplerConfig, draw_samples, respaced, sample_generators, standard_normal

    path = unet_dir if layout == "model" else pipeline_dir
    run = flatkit.load(path)
    cfg = SamplerConfig(n=2, sampling_steps=steps, sampler="ddim", ddim_eta=0.0, seed=0, batch_size=2,
                        clip=clip)
    diffusion = respaced(run.diffusion, cfg)
    ours = draw_samples(run.model, diffusion, cfg, (3, 16, 16))

    sched_cfg = dict(DDPM_DEFAULTS) if layout == "model" else json.loads(
        (pipeline_dir / "scheduler" / "scheduler_config.json").read_text())
    sched = diffusers.DDIMScheduler.from_config(sched_cfg, timestep_spacing="leading", steps_offset=0,
                                                set_alpha_to_one=True, clip_sample=clip)
    sched.set_timesteps(steps)
    assert sorted(int(t) for t in sched.timesteps) == [int(t) for t in diffusion.timestep_map]
    unet = reference(path if layout == "model" else path / "unet")
    x = standard_normal(sample_generators(0, [0, 1]), (3, 16, 16))  # flatkit's x_T of samples 0 and 1
    with torch.no_grad():
        for t in sched.timesteps:
            eps = unet(x, t).sample
            x = sched.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    if not clip:  # a random UNet saturates most clipped pixels: the unclipped chain checks every value
        assert (ours.abs() > 1).float().mean() > 0.2
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5 * max(1.0, float(x.abs().max())))


# ------------------------------------------------------------------------------------------ analyses and CLI


def test_objective_and_hvp_modes_on_a_diffusers_unet(unet_dir):
    from flatkit.curvature.hvp import hvp

    run = flatkit.load(unet_dir)
    obj = flatkit.Objective(run, data="builtin:shapes16", n=4, seed=0, include="down_blocks.1.attentions.0.to_q.*")
    # parameters before an attention block and a GroupNorm: the tangent passes through both
    assert set(obj.params) == {"down_blocks.1.attentions.0.to_q.weight", "down_blocks.1.attentions.0.to_q.bias"}
    obj.check_determinism()
    v = {k: torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) for k, p in obj.params.items()}
    a = hvp(obj, v, mode="fwd_rev")  # forward-over-reverse needs the explicit attention processor
    b = hvp(obj, v, mode="double_backward")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(run.model.parameters(), reference(unet_dir).parameters(),
                                                  strict=True))


def test_cli_hessian_and_landscape(unet_dir, tmp_path):
    r = run_cli("hessian", unet_dir, "--top-k", 1, "--max-iter", 3, "--data", "builtin:shapes16", "--n-eval", 4,
                "--out", tmp_path / "h")
    assert r.exit_code == 0, r.output
    assert "assumed scheduler=DDPMScheduler defaults" in r.output
    from flatkit.analyses.hessian import HessianResult

    h = HessianResult.load(tmp_path / "h")
    assert len(h.eigenvalues[0]) == 1 and np.isfinite(h.eigenvalues[0][0])
    assert h.meta["run_config"]["source"] == "diffusers"
    assert h.meta["checkpoint_sha256"] is not None
    r = run_cli("landscape", unet_dir, "--points", 3, "--data", "builtin:shapes16", "--n-eval", 4,
                "--out", tmp_path / "l")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "l" / "landscape.json").read_text())
    assert res["points"] == 3 and abs(res["loss_centre"][0] - h.loss[0]) < 1e-6
    assert (tmp_path / "l" / "landscape.png").is_file()


# ----------------------------------------------------------------------------------------------- bad input


def test_directory_without_config_json(unet_dir, tmp_path):
    d = tmp_path / "noconfig"
    d.mkdir()
    shutil.copy(unet_dir / "diffusion_pytorch_model.safetensors", d)
    one_line_error(run_cli("hessian", d, "--data", "builtin:shapes16"), str(d), "config.json")
    with pytest.raises(UsageError, match="config.json"):
        flatkit.load(d)


def test_mismatched_weights(unet_dir, tmp_path):
    d = tmp_path / "mismatch"
    tiny_unet(block_out_channels=(16, 32)).save_pretrained(d)
    shutil.copy(unet_dir / "config.json", d / "config.json")  # config of (32, 32), weights of (16, 32)
    one_line_error(run_cli("landscape", d, "--data", "builtin:shapes16"), "diffusion_pytorch_model.safetensors",
                   "weights do not match the architecture")


def test_refused_scheduler_and_model_configs(unet_dir, tmp_path):
    for key, value, needle in (("prediction_type", "v_prediction", "prediction_type 'v_prediction'"),
                               ("beta_schedule", "sigmoid", "beta_schedule 'sigmoid'"),
                               ("rescale_betas_zero_snr", True, "rescale_betas_zero_snr")):
        d = tmp_path / f"bad_{key}"
        shutil.copytree(unet_dir, d)
        (d / "scheduler_config.json").write_text(json.dumps({**DDPM_DEFAULTS, key: value}))
        one_line_error(run_cli("info", d), "scheduler_config.json", needle)
    d = tmp_path / "cond"
    shutil.copytree(unet_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DConditionModel"}))
    one_line_error(run_cli("info", d), "config.json", "UNet2DConditionModel")
    (d / "config.json").write_text(json.dumps({**cfg, "time_embedding_type": "fourier"}))
    one_line_error(run_cli("info", d), "config.json", "time_embedding_type 'fourier'")
    one_line_error(run_cli("hessian", unet_dir, "--weights", "ema", "--data", "builtin:shapes16"), "--weights ema",
                   "variant")
    with pytest.raises(UsageError, match="learned variance|variance_type"):
        diffusion_from_scheduler({**DDPM_DEFAULTS, "variance_type": "learned_range"}, "s.json")
