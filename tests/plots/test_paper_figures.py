"""The figures a paper can use (issue 15.4): what a reader would stumble on is checked on the figure objects.

Each test draws from a small hand-made result, keeps the matplotlib figure instead of writing it (``save`` is
replaced in the plot module) and checks labels, ticks, limits, legends and line styles; the radial profile
ΔL(r) is checked against the closed form of a quadratic bowl."""

import base64
import gzip
import re

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from flatkit.analyses.hessian import HessianResult  # noqa: E402
from flatkit.analyses.landscape.core import LandscapeResult  # noqa: E402
from flatkit.plots import curvature, landscape, paper, robustness  # noqa: E402


@pytest.fixture
def kept(monkeypatch):
    """Figures passed to ``save`` in the plot modules, kept open (not written)."""
    figs = []

    def keep(fig, stem, formats=("png", "pdf")):
        figs.append(fig)
        return []

    for mod in (landscape, robustness, curvature, paper):
        monkeypatch.setattr(mod, "save", keep)
    yield figs
    import matplotlib.pyplot as plt

    for f in figs:
        plt.close(f)


def _bowl(p=0.8, q=0.3, n=15, models=1, centre=0.04):
    a = np.linspace(-1, 1, n)
    A, B = np.meshgrid(a, a, indexing="ij")
    vals = np.stack([centre + (p + 0.5 * m) * A**2 + q * B**2 for m in range(models)])
    meta = {"checkpoints": [{"label": f"m{m}", "weights": "ema", "step": 100 * (m + 1)} for m in range(models)]}
    return LandscapeResult(dims=2, points=n, coords_a=a, coords_b=a, values=vals,
                           labels=[f"m{m}" for m in range(models)], loss_centre=[centre] * models, meta=meta,
                           complete=True)


def _round(t: float) -> bool:
    """1, 2, 2.5 or 5 × 10^k (or 0)."""
    if t == 0:
        return True
    mant = abs(t) / 10.0 ** np.floor(np.log10(abs(t)))
    return any(np.isclose(mant, s) for s in (1.0, 2.0, 2.5, 5.0, 10.0))


def _round_ticks(ticks) -> bool:
    """Equally spaced by a round step (1, 2, 2.5 or 5 × 10^k), each a whole multiple of it (0, 0.2, 0.4, ...)."""
    t = np.asarray(ticks, dtype=float)
    step = np.diff(t)
    return (len(t) >= 3 and np.allclose(step, step[0]) and _round(step[0])
            and np.allclose(t / step[0], np.round(t / step[0])))


# ------------------------------------------------------------------------------------------------ landscape
def test_radial_profile_of_a_quadratic_bowl_is_its_angular_average():
    p, q = 0.8, 0.3
    a = np.linspace(-1, 1, 201)
    A, B = np.meshgrid(a, a, indexing="ij")
    prof = landscape.radial_profile(a, a, 0.5 + p * A**2 + q * B**2, centre=0.5)
    assert prof["r"][0] == 0 and prof["mean"][0] == 0 and prof["count"][0] == 1
    assert prof["r"].max() <= 1.0 + 1e-12  # the disc inside the grid only
    far = prof["r"] > 0.2
    # the angular average of p α² + q β² on the circle of radius r is (p + q) r² / 2
    np.testing.assert_allclose(prof["mean"][far], (p + q) / 2 * prof["r"][far] ** 2, rtol=0.03)
    # band: min and max over the annulus are the minor and major axes, p r² and q r²
    np.testing.assert_allclose(prof["hi"][far], p * prof["r"][far] ** 2, rtol=0.08)
    np.testing.assert_allclose(prof["lo"][far], q * prof["r"][far] ** 2, rtol=0.08)


def test_radial_profile_skips_nan_and_isotropic_bowl_is_exact_up_to_the_annulus():
    a = np.linspace(-2, 2, 41)
    A, B = np.meshgrid(a, a, indexing="ij")
    v = 3.0 * (A**2 + B**2)
    v[20, 25] = np.nan
    prof = landscape.radial_profile(a, a, v)
    assert np.isfinite(prof["mean"]).all() and prof["count"].sum() == np.sum((np.hypot(A, B) <= 2) & np.isfinite(v))
    assert np.all(prof["lo"] <= prof["mean"]) and np.all(prof["mean"] <= prof["hi"])
    # the mean of 3 r_i² over an annulus is at least 3 (mean r_i)² and within one annulus width of it
    assert np.all(prof["mean"] >= 3 * prof["r"] ** 2 - 1e-12)
    assert np.all(prof["mean"] - 3 * prof["r"] ** 2 <= 3 * 0.1**2 + 1e-12)


def test_single_landscape_plots_delta_l_with_a_labelled_round_colour_bar(kept):
    landscape.plot_landscape(_bowl(), "unused")
    fig = kept[0]
    cbar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(cbar) == 1
    assert cbar[0].get_ylabel().startswith("ΔL = L(θ")
    ticks = [t for t in cbar[0].get_yticks() if cbar[0].get_ylim()[0] <= t <= cbar[0].get_ylim()[1]]
    assert _round_ticks(ticks), ticks
    # one row: contour + 3-D surface + colour bar, nothing blank
    assert len(fig.axes) == 3 and fig.get_size_inches()[1] < 4.5
    contour = fig.axes[0]
    assert "ema weights" in contour.get_title() and "step 100" in contour.get_title()  # the weights named
    # ΔL: the filled levels start at 0 (the centre), not at L(θ) = 0.04
    filled = next(c for c in contour.get_children() if hasattr(c, "levels") and getattr(c, "filled", False))
    assert filled.levels[0] == 0 and _round_ticks(filled.levels)
    z3 = fig.axes[1]
    assert z3.get_zlabel() == "ΔL" and z3.get_zlim()[0] <= 0 < z3.get_zlim()[1]


def test_compare_landscape_shares_one_z_range_and_overlays_radial_profiles(kept):
    landscape.plot_landscape(_bowl(models=2), "unused")
    fig = kept[0]
    three_d = [ax for ax in fig.axes if ax.name == "3d"]
    assert len(three_d) == 2 and three_d[0].get_zlim() == three_d[1].get_zlim()
    prof = [ax for ax in fig.axes if ax.get_xlabel().startswith("radius r")]
    assert len(prof) == 1
    lines = [ln for ln in prof[0].get_lines() if ln.get_label() in ("m0", "m1")]
    assert len(lines) == 2
    # the steeper bowl (m1: p + 0.5) lies above at every radius > 0
    y0, y1 = (np.asarray(ln.get_ydata()) for ln in lines)
    assert np.all(y1[1:] > y0[1:])


def test_delta_levels_are_round_and_go_logarithmic_for_a_narrow_basin():
    lev, ticks, log = landscape.delta_levels(np.linspace(0, 0.73, 50))
    assert not log and lev[0] <= 0 and lev[-1] >= 0.73 and _round_ticks(ticks) and _round_ticks(lev)
    a = np.linspace(-1, 1, 21)
    A, B = np.meshgrid(a, a, indexing="ij")
    lev, ticks, log = landscape.delta_levels(50 * (A**2 + B**2) ** 2)
    assert log and all(_round(t) for t in lev) and all(np.log10(t).is_integer() for t in ticks)


def test_pca_theta_star_is_drawn_above_the_last_checkpoint(kept):
    res = _bowl()
    res.directions = "pca"
    res.explained_variance = [0.9, 0.08]
    res.marks = [["step 60", -0.8, 0.5], ["step 120", -0.5, 0.1], ["step 130", -0.48, 0.12], ["step 240", 0.0, 0.0]]
    landscape.plot_landscape(res, "unused")
    ax = kept[0].axes[0]
    star = next(ln for ln in ax.get_lines() if ln.get_marker() == "*")
    marks = next(ln for ln in ax.get_lines() if ln.get_marker() == "D")
    assert star.get_zorder() > marks.get_zorder()
    names = [t.get_text() for t in ax.texts]
    assert "step 240" in names and not ({"step 120", "step 130"} <= set(names))  # the two close ones: one name
    assert "90 % of var." in ax.get_xlabel() and "PCA direction 2" in ax.get_ylabel()


def test_landscape_html_is_small_self_contained_and_fills_the_window(tmp_path):
    path = landscape.plot_landscape_html(_bowl(models=2, n=21), tmp_path / "landscape.html")
    page = path.read_text()
    assert path.stat().st_size < 2_500_000  # plotly.js alone is 4.8 MB uncompressed
    assert len(re.findall(r"plotly\.js v\d", page)) == 1 and page.count("var b64 =") == 1
    assert 'src="http' not in page and "<script src" not in page
    js = gzip.decompress(base64.b64decode(re.search(r'var b64 = "([^"]+)"', page).group(1))).decode()
    assert js.startswith("/**\n* plotly.js v") and "window.Plotly = Plotly" in js
    assert "responsive: true" in page and "width:100%" in page and "height:100vh" in page
    assert '"autosize":true' in page and '"orientation":"h"' in page  # the legend above, not on the colour bar
    assert '"height":' not in page.split("var s = ", 1)[1].split("Plotly.newPlot", 1)[0].replace(
        '"height":100', "")  # no fixed pixel height


# ------------------------------------------------------------------------------------------------ curvature
def _hess(**kw):
    base = dict(labels=["plain:raw", "plain:raw"], loss=[0.1, 0.1], num_params=[10, 10], eigenvalues=[[5.0], [5.0]],
                trace=[], trace_stderr=[], meta={"config": {"n_eval": 8}})
    base.update(kw)
    return HessianResult(**base)


def test_density_plot_leaves_out_the_floor_and_names_each_run_once(kept):
    g = np.linspace(-1, 11, 400)
    d = np.exp(-(g**2) / 0.1) + 1e-4 * np.exp(-((g - 10) ** 2) / 0.1)
    d = np.maximum(d, 1e-12)  # the numerical floor: a plateau if drawn
    curvature.plot_density(_hess(density_grid=np.stack([g, g]), density=np.stack([d, d])), "unused")
    ax = kept[0].axes[0]
    assert ax.get_ylim()[0] > 1e-12 * 10
    for ln in ax.get_lines():
        y = np.asarray(ln.get_ydata(), dtype=float)
        assert not np.any(np.isclose(y[np.isfinite(y)], 1e-12, rtol=1e-3, atol=0))
    handles, labels = ax.get_legend_handles_labels()
    assert labels == ["plain:raw"]


def test_per_timestep_axis_is_log_with_plain_number_ticks_when_it_spans_decades(kept):
    lam = np.array([[[300.0], [20.0], [2.0], [0.5]]])
    res = _hess(labels=["a"], eigenvalues=[[300.0]], per_timestep_edges=np.array([0, 250, 500, 750, 1000]),
                per_timestep_top_eigenvalues=lam)
    curvature.plot_per_timestep(res, "unused")
    ax = kept[0].axes[0]
    kept[0].canvas.draw()
    assert ax.get_yscale() == "log"
    shown = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert shown and all(re.fullmatch(r"[0-9.]+", s) for s in shown), shown  # 1, 10, 100 not 10^2


# ------------------------------------------------------------------------------------------------ robustness
def _prior():
    from flatkit.analyses.robustness.prior import PriorResult

    return PriorResult(labels=["a", "b"], kind=["shift_scale", "shift_scale", "shift_scale", "noise"],
                       mu=[0.0, 0.5, 0.0, 0.0], s=[1.0, 1.0, 1.2, 1.0], eta=[0.0, 0.0, 0.0, 0.3],
                       kl=[0.0, 96.0, 29.0, 5.0], drift_mse=[[0.0, 1.0, 0.3, 0.1], [0.0, 0.9, 0.2, 0.1]],
                       loss_change=[[0.0, 0.2, 0.1, 0.05], [0.0, 0.2, 0.1, 0.04]],
                       distance=[[0.3, 1.0, 0.5, 0.4], [0.3, 1.0, 0.5, 0.4]], distance_name="SW2")


def test_prior_plot_joins_no_points_and_reads_kl_from_zero(kept):
    robustness.plot_prior(_prior(), "unused")
    fig = kept[0]
    for ax in fig.axes:
        for ln in ax.get_lines():
            if len(ln.get_xdata()) > 1:
                assert ln.get_linestyle() == "None", ln.get_label()
        assert ax.get_xscale() == "symlog"
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels[0] == "0" and "1" in labels and "10" in labels  # linear to the first decade


def test_exposure_gap_is_symlog_when_the_last_step_dominates(kept):
    from flatkit.analyses.robustness.exposure import ExposureResult

    t = [950, 700, 450, 200, 0]
    res = ExposureResult(labels=["a"], t=[t], sampling_norm=[[16.0] * 5], training_norm=[[16.0] * 5],
                         gap=[[0.02, -0.05, 0.04, 0.3, 14.0]], gap_last=[14.0], gap_mean=[2.9],
                         delta_t=[[None] * 5], eps_norm="l2")
    robustness.plot_exposure(res, "unused")
    assert kept[0].axes[1].get_yscale() == "symlog"
    assert robustness.gap_symlog is paper.__dict__.get("gap_symlog", robustness.gap_symlog)


# ------------------------------------------------------------------------------------------------ many arms
ARMS = ["ADM", "+EMA", "+SWA", "+IP", "+IP+EMA", "+IP+SWA", "+SAM", "+SAM+EMA", "+SAM+SWA"]


def test_arm_groups_split_nine_arms_by_training_method_and_keep_few_together():
    assert [g for g, _ in paper.arm_groups(ARMS)] == ["ADM", "+IP", "+SAM"]
    assert paper.arm_groups(ARMS[:3]) == [("", [0, 1, 2])]
    six = [f"{r}:{w}" for r in ("plain", "sam") for w in ("raw", "ema", "swa")]
    assert [g for g, idx in paper.arm_groups(six)] == ["plain", "sam"]
    assert [len(idx) for _, idx in paper.arm_groups([f"m{i}" for i in range(7)])] == [3, 3, 1]


def _perturb_item(k):
    r = np.linspace(0, 0.1, 5)
    return {"radii": r, "mean": (1 + 0.1 * k) * r**2, "std": 0.1 * r**2, "worst": (5 + k) * r**2, "loss0": 0.1,
            "relative": "filter", "k": 4}


@pytest.mark.parametrize("n", [6, 9])
def test_perturb_across_many_arms_draws_small_multiples(kept, n):
    paper.plot_perturb_arms([(lab, _perturb_item(k)) for k, lab in enumerate(ARMS[:n])], "unused")
    axes = kept[0].axes
    assert len(axes) == 2 * len(paper.arm_groups(ARMS[:n]))
    for ax in axes:  # at most three arms (bands) in colour per panel, the rest grey
        coloured = [ln for ln in ax.get_lines() if ln.get_label() in ARMS]
        assert 1 <= len(coloured) <= 3 and len(ax.collections) <= 3


def test_exposure_across_many_arms_draws_small_multiples(kept):
    t = np.array([900.0, 600.0, 300.0, 0.0])
    items = [(lab, {"t": t, "sampling": 16 + 0 * t, "training": 15 + 0 * t, "gap": np.array([0.01, 0.02, 0.1, 9.0]),
                    "gap_mean": 2.0, "norm": "l2", "steps": 4}) for lab in ARMS]
    paper.plot_exposure_arms(items, "unused")
    axes = kept[0].axes
    assert len(axes) == 6 and axes[3].get_yscale() == "symlog"


def test_prior_and_curvature_figures_across_arms(kept):
    pts = [["shift_scale", 0.0, 1.0, 0.0], ["shift_scale", 0.5, 1.0, 0.0], ["noise", 0.0, 1.0, 0.3]]
    items = [(lab, {"points": pts, "kl": [0.0, 96.0, 5.0], "drift_mse": [0.0, 1.0 + k / 10, 0.1],
                    "loss_change": [0.0, 0.2, 0.05], "steps": 10}) for k, lab in enumerate(ARMS)]
    paper.plot_prior_arms(items, "unused")
    fig = kept[-1]
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert all(ln.get_linestyle() == "None" for ln in ax.get_lines() if ln.get_label() in ARMS)
    ticks = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert ticks[0].startswith("μ=0, s=1") and "η=0.3" in ticks[1]  # ordered by KL
    g = np.linspace(-1, 11, 200)
    cv = [(lab, {"density_grid": g, "density": np.maximum(np.exp(-g**2), 1e-12), "t_mid": np.array([250.0, 750.0]),
                 "per_timestep": np.array([10.0 + k, 0.5])}) for k, lab in enumerate(ARMS)]
    paper.plot_curvature_arms(cv, "unused")
    fig = kept[-1]
    assert len(fig.axes) == 6 and fig.axes[0].get_ylim()[0] > 1e-11


def test_report_landscapes_div_carries_no_plotly_copy_and_waits_for_the_page_one():
    a = np.linspace(-1, 1, 7)
    A, B = np.meshgrid(a, a, indexing="ij")
    items = [(lab, {"dims": 2, "values": 0.1 + k * (A**2 + B**2), "loss_centre": 0.1, "coords_a": a, "coords_b": a})
             for k, lab in enumerate(["ADM", "+SAM"], start=1)]
    div = paper.landscape_plotly_html(items)
    assert "var b64" not in div and "plotly.js v" not in div and len(div) < 50_000
    assert "window.flatkitPlotly.then" in div and "width:100%" in div and ("ΔL" in div or "\\u0394L" in div)
