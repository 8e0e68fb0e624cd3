"""``flatkit prior CKPT...``: robustness to a perturbed noise prior N(μ1, s²I) (and x_T + η z), paired by seed."""

from __future__ import annotations

import click

from flatkit.commands._common import (
    echo_written,
    models_options,
    option_errors,
    precision_options,
    run_options,
    sampling_setup,
    settings_from,
    settings_options,
)
from flatkit.settings import PriorSettings


@click.command("prior")
@models_options
@settings_options(PriorSettings)
@run_options
@precision_options()
def command(**params) -> None:
    """Sample from perturbed priors paired by seed; report KL, drift, loss change and distance to the data."""
    from flatkit.analyses.robustness.prior import PriorResult, prior
    from flatkit.plots.robustness import plot_prior, plot_prior_samples

    s = settings_from(PriorSettings, params)
    run = sampling_setup(params, "prior")
    runs = run.models.runs
    with run.context, option_errors():
        res = prior(runs[0], compare=runs[1:], labels=run.models.labels, settings=s, device=run.device,
                    progress=not params["no_progress"])
    res.meta["precision"] = run.precision
    jpath, npath = res.save(run.out_dir)
    saved = PriorResult.load(run.out_dir)
    echo_written([jpath, npath, *plot_prior(saved, run.out_dir / "prior"),
                  *plot_prior_samples(saved, run.out_dir / "prior_samples")])
