"""``flatkit info CKPT``: architecture, parameter count, weights present, diffusion, data spec, step."""

from __future__ import annotations

import dataclasses
import json

import click

from flatkit.commands._common import checkpoint_options


def describe(ckpt: str, adm_flags: str | None = None, trust: bool = False, download: bool = False) -> dict:
    """What ``flatkit info`` prints, as a dict (Python API twin of the command)."""
    from flatkit.run import load

    run = load(ckpt, weights="raw", adm_flags=adm_flags, trust=trust, download=download)
    m = run.model
    return {
        "path": run.path,
        "sha256": run.sha256,
        "source": run.config.source,
        "architecture": type(m).__name__,
        "model": dataclasses.asdict(run.config.model),
        "num_params": sum(p.numel() for p in m.parameters()),
        "weights": run.available_weights,
        "diffusion": dataclasses.asdict(run.config.diffusion),
        "data": run.config.data,
        "step": run.step,
        "assumed_adm_flags": run.assumed,
        "hub": run.hub,
    }


@click.command("info")
@click.argument("ckpt", metavar="CKPT")
@checkpoint_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def command(ckpt: str, adm_flags: str | None, trust_checkpoint: bool, download: bool, as_json: bool) -> None:
    """Describe a checkpoint: architecture, parameters, weights, diffusion, data, step."""
    d = describe(ckpt, adm_flags=adm_flags, trust=trust_checkpoint, download=download)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    m, dif = d["model"], d["diffusion"]
    click.echo(f"checkpoint   {d['path']}  (sha256 {d['sha256'][:12]}, {d['source']})")
    if d["hub"]:
        h = d["hub"]
        click.echo(f"hub          {h['repo_id']} revision {h['revision']} (commit {h['commit'][:12]}"
                   f"{', subfolder ' + h['subfolder'] if h['subfolder'] else ''}), {len(h['files'])} files read")
    if m["arch"] == "adm_unet":
        arch = (f"ADM UNet {m['image_size']}x{m['image_size']}x{m['in_channels']}, {m['num_channels']} channels, "
                f"mult {m['channel_mult'] or 'default'}, {m['num_res_blocks']} res blocks, "
                f"attention at {m['attention_resolutions'] or 'none'}, "
                f"heads {m['num_heads']} / head channels {m['num_head_channels']}, "
                f"scale-shift norm {m['use_scale_shift_norm']}, resblock up/down {m['resblock_updown']}, "
                f"learned sigma {m['learn_sigma']}, dropout {m['dropout']}")
    elif m["arch"].startswith("diffusers:"):
        arch = (f"{m['arch']} {m['image_size']}x{m['image_size']}x{m['in_channels']}, {m['num_channels']} channels, "
                f"mult {m['channel_mult']}, {m['num_res_blocks']} layers per block, dropout {m['dropout']}")
    else:
        arch = f"MLP denoiser, {m['data_dim']}-D data, hidden {m['hidden']}, depth {m['depth']}"
    click.echo(f"architecture {arch}")
    click.echo(f"parameters   {d['num_params']:,}")
    click.echo(f"weights      {', '.join(d['weights'])}")
    click.echo(f"diffusion    {dif['diffusion_steps']} steps, {dif['noise_schedule']} schedule, "
               f"learned sigma {dif['learn_sigma']}, rescale_learned_sigmas {dif['rescale_learned_sigmas']}")
    click.echo(f"data         {d['data'] or 'not recorded'}")
    click.echo(f"step         {d['step'] if d['step'] is not None else 'not recorded'}")
    if d["assumed_adm_flags"] and d["source"] == "adm":
        click.echo(f"assumed      {', '.join(d['assumed_adm_flags'])} (ADM defaults; set with --adm-flags)")
    elif d["assumed_adm_flags"]:
        click.echo(f"assumed      {'; '.join(d['assumed_adm_flags'])}")
