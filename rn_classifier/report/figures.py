"""The report's figures, drawn from the numbers in stats.json / report.json only.

Each function returns PNG bytes; :func:`data_uri` inlines them into the HTML (base64), so the
report is one self-contained file. Matplotlib ``Figure`` objects on the Agg canvas (no pyplot
state), one colour per model, the same colour in every figure.
"""

from __future__ import annotations

import base64
import io

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def colour_map(models: list[str]) -> dict[str, str]:
    return {m: COLOURS[i % len(COLOURS)] for i, m in enumerate(models)}


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(width=5.0, height=4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=80, layout="tight")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _title(ax, text: str, synthetic: bool) -> None:
    ax.set_title(text + (" — SYNTHETIC DATA" if synthetic else ""), fontsize=9)


def roc_figure(cohort: dict, bands: dict, colours: dict, title: str, synthetic: bool) -> bytes:
    """ROC curves (stats.json ``roc_curve``) with pointwise bootstrap bands (report.json)."""
    fig = _figure()
    ax = fig.subplots()
    for model, entry in cohort["models"].items():
        roc = entry["roc_curve"]
        band = bands.get(model)
        if band:
            ax.fill_between(band["fpr"], band["tpr_lower"], band["tpr_upper"], step="post",
                            color=colours[model], alpha=0.12, linewidth=0)
        ax.step(roc["fpr"], roc["tpr"], where="post", color=colours[model],
                label=f"{model} (AUC {entry['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("1 − specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=7, loc="lower right")
    _title(ax, title, synthetic)
    return _png(fig)


def reliability_figure(cohort: dict, colours: dict, title: str, synthetic: bool) -> bytes:
    """Reliability diagram (equal-width bins, point size ∝ cases per bin)."""
    fig = _figure()
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8, label="perfect calibration")
    for model, entry in cohort["models"].items():
        rel = entry["reliability"]["uniform"]
        sizes = [12 + 4 * c for c in rel["count"]]
        ax.plot(rel["mean_predicted"], rel["observed_fraction"], color=colours[model], linewidth=1)
        ax.scatter(rel["mean_predicted"], rel["observed_fraction"], s=sizes, color=colours[model],
                   label=f"{model} (ECE {entry['ece']:.3f})")
    ax.set_xlabel("mean predicted probability of radiation necrosis")
    ax.set_ylabel("observed fraction radiation necrosis")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="upper left")
    _title(ax, title, synthetic)
    return _png(fig)


def decision_figure(cohort: dict, colours: dict, title: str, synthetic: bool) -> bytes:
    """Net benefit vs threshold probability (stats.json ``decision_curve``)."""
    curve = cohort["decision_curve"]
    fig = _figure()
    ax = fig.subplots()
    t = curve["thresholds"]
    ax.plot(t, curve["treat_all"], color="black", linewidth=0.8, label="treat all as RN")
    ax.plot(t, curve["treat_none"], color="grey", linewidth=0.8, linestyle="--", label="treat none")
    for model, nb in curve["net_benefit"].items():
        ax.plot(t, nb, color=colours[model], label=model)
    values = [v for nb in curve["net_benefit"].values() for v in nb if v is not None]
    top = max(values + [v for v in curve["treat_all"] if v is not None] + [0.05])
    ax.set_ylim(-0.05, top * 1.1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.legend(fontsize=7, loc="upper right")
    _title(ax, title, synthetic)
    return _png(fig)


def referral_figure(curves: dict, colours: dict, title: str, synthetic: bool) -> bytes:
    """AUC of the retained cases vs the fraction referred (report.json ``referral``)."""
    fig = _figure(5.0, 3.6)
    ax = fig.subplots()
    for model, curve in curves.items():
        xs = [f for f, a in zip(curve["fraction_referred"], curve["auc"]) if a is not None]
        ys = [a for a in curve["auc"] if a is not None]
        ax.plot([100 * x for x in xs], ys, marker="o", color=colours[model], label=model)
    ax.set_xlabel("most uncertain cases referred to a reader (%)")
    ax.set_ylabel("AUC of the cases kept")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    _title(ax, title, synthetic)
    return _png(fig)


def contour_auc_figure(by_model: dict, colours: dict, title: str, synthetic: bool) -> bytes:
    """AUC (DeLong CI) of each model under each contour of one cohort (stats.json ``contour``)."""
    import numpy as np

    fig = _figure(5.6, 3.8)
    ax = fig.subplots()
    variants = list(dict.fromkeys(v for entry in by_model.values() for v in entry))
    width = 0.8 / max(len(by_model), 1)
    for i, (model, entry) in enumerate(by_model.items()):
        xs = np.arange(len(variants)) + (i - (len(by_model) - 1) / 2) * width
        aucs = [(entry.get(v) or {}).get("auc") for v in variants]
        cis = [(entry.get(v) or {}).get("auc_ci") for v in variants]
        keep = [k for k, a in enumerate(aucs) if a is not None]
        ax.errorbar(xs[keep], [aucs[k] for k in keep],
                    yerr=np.array([[aucs[k] - cis[k][0], cis[k][1] - aucs[k]] for k in keep]).T
                    if keep else None, fmt="o", color=colours.get(model), label=model, capsize=2)
    ax.set_xticks(np.arange(len(variants)), variants, rotation=30, fontsize=7)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("AUC under this contour (95 % CI)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    _title(ax, title, synthetic)
    return _png(fig)
