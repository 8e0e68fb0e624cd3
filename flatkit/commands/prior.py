"""``flatkit prior CKPT...``: robustness to a perturbed noise prior N(μ1, s²I) (and x_T + η z), paired by seed."""

from __future__ import annotations

from flatkit.commands._common import analysis_command, echo_written, sampling_setup
from flatkit.settings import PriorSettings


@analysis_command("prior", PriorSettings)
def command(**params) -> None:
    """Sample from perturbed priors paired by seed; report KL, drift, loss change and distance to the data."""
    from flatkit.analyses.robustness.prior import PriorResult, prior
    from flatkit.plots.robustness import plot_prior, plot_prior_samples

    run = sampling_setup(params, "prior", PriorSettings)
    s = run.settings
    runs = run.models.runs
    with run.context:
        res = prior(runs[0], compare=runs[1:], labels=run.models.labels, settings=s, device=run.device,
                    progress=not params["no_progress"])
    res.meta["precision"] = run.precision
    jpath, npath = res.save(run.out_dir)
    saved = PriorResult.load(run.out_dir)
    echo_written([jpath, npath, *plot_prior(saved, run.out_dir / "prior"),
                  *plot_prior_samples(saved, run.out_dir / "prior_samples")])
