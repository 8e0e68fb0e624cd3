"""``flatkit exposure CKPT...``: exposure bias, ‖ε_θ‖ along the sampling chain vs on forward-noised data."""

from __future__ import annotations

import click

from flatkit.commands._common import analysis_command, echo_written, sampling_result
from flatkit.settings import ExposureSettings


@analysis_command("exposure", ExposureSettings)
def command(**params) -> None:
    """ADM-ES protocol: sampling vs training ‖ε_θ‖ at the same respaced steps, their gap, and δ_t."""
    from flatkit.analyses.robustness.exposure import ExposureResult, exposure
    from flatkit.plots.robustness import plot_exposure

    res, run, written = sampling_result(params, "exposure", ExposureSettings, exposure)
    if res is None:  # reused: --out holds this result already
        return
    echo_written([*written, *plot_exposure(ExposureResult.load(run.out_dir), run.out_dir / "exposure")])
    for m, label in enumerate(res.labels):
        click.echo(f"gap last step {res.gap_last[m]:.4g}, mean {res.gap_mean[m]:.4g} ({label})")
    from flatkit.repeats import summary_lines

    for line in summary_lines(res):  # --repeats
        click.echo(line)
