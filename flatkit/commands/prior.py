"""``flatkit prior CKPT...``: robustness to a perturbed noise prior N(μ1, s²I) (and x_T + η z), paired by seed."""

from __future__ import annotations

from flatkit.commands._common import analysis_command, echo_written, sampling_result
from flatkit.settings import PriorSettings


@analysis_command("prior", PriorSettings)
def command(**params) -> None:
    """Sample from perturbed priors paired by seed; report KL, drift, loss change and distance to the data."""
    from flatkit.analyses.robustness.prior import PriorResult, prior
    from flatkit.plots.robustness import plot_prior, plot_prior_samples

    res, run, written = sampling_result(params, "prior", PriorSettings, prior)
    if res is None:  # reused: --out holds this result already
        return
    saved = PriorResult.load(run.out_dir)
    echo_written([*written, *plot_prior(saved, run.out_dir / "prior"),
                  *plot_prior_samples(saved, run.out_dir / "prior_samples")])
    import click

    from flatkit.repeats import summary_lines

    last, at = len(res.kind) - 1, f"μ = {res.mu[-1]:g}, s = {res.s[-1]:g}, η = {res.eta[-1]:g}"  # the last point
    for line in summary_lines(res, [(k, (last,), f"{k} at {at}") for k in ("drift_mse", "loss_change", "distance")]):
        click.echo(line)
