"""PNG plots and a markdown summary of an evaluation report, written next to its JSON."""
from __future__ import annotations

import os

RULE_STYLE = {
    "likelihood_ratio": ("tab:red", "-"),
    "distance_to_retained": ("tab:blue", "-"),
    "mahalanobis_to_retained": ("tab:purple", "--"),
    "cosine_to_retained": ("tab:brown", "--"),
    "closest_to_unwanted": ("tab:olive", ":"),
    "ambiguous_first": ("tab:green", "-"),
    "random": ("tab:gray", "-."),
}


def companion(path: str, suffix: str) -> str:
    """``out/eval.json`` -> ``out/eval<suffix>``."""
    return os.path.splitext(path)[0] + suffix


def write_plots(report: dict, path: str) -> list[str]:
    """Budget curves, the Pareto frontier and (when present) the downstream metrics, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = f"{report['n_unwanted']:,} unwanted / {report['n_retained']:,} retained rows, {report['dims']} dims"
    written = []

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for rule, entry in report["rules"].items():
        color, style = RULE_STYLE.get(rule, (None, "-"))
        c = entry["curve"]
        ax1.plot(c["fraction"], c["kl_removal"], style, color=color, label=rule)
        ax2.plot(c["fraction"], c["kl_preservation"], style, color=color, label=rule)
    ax1.axhline(report["halving_alpha"], color="black", lw=0.8, ls=":", label="halfway to full removal")
    ax1.axhline(report["kappa"], color="black", lw=0.8, label="full removal (kappa)")
    ax1.set(xlabel="fraction of the unwanted rows deleted", ylabel="KL(p1 || p_f), nats", title="removal")
    ax2.set(xlabel="fraction of the unwanted rows deleted", ylabel="KL(p2 || p_f), nats", title="preservation")
    ax1.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    written.append(_save(fig, companion(path, "_curves.png")))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for rule, entry in report["rules"].items():
        color, style = RULE_STYLE.get(rule, (None, "-"))
        ax.plot(entry["curve"]["kl_preservation"], entry["curve"]["kl_removal"], style, color=color, lw=1, label=rule)
    frontier = report["frontier"]
    ax.step(frontier["empirical"]["kl_preservation"], frontier["empirical"]["kl_removal"], where="post",
            color="black", lw=1.5, label="empirical frontier")
    ax.plot(frontier["closed_form"]["epsilon"], frontier["closed_form"]["alpha_max"], color="black", ls="--",
            lw=1, label="alpha_max(eps) = (sqrt(kappa)+sqrt(eps))^2")
    ax.plot([0.0], [report["kappa"]], "ko", label="full removal")
    ax.set(xlabel="KL(p2 || p_f) (preservation, lower is better)", ylabel="KL(p1 || p_f) (removal, higher is better)",
           title="Pareto frontier")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, companion(path, "_frontier.png")))

    if report.get("downstream"):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        for rule, entry in report["downstream"]["rules"].items():
            color, style = RULE_STYLE.get(rule, (None, "-"))
            x = [p["budget"] / report["n_unwanted"] for p in entry["points"]]
            ax1.plot(x, [p["forget_accuracy"] for p in entry["points"]], style, marker="o", ms=3, color=color,
                     label=rule)
            ax2.plot(x, [p["retained_accuracy"] for p in entry["points"]], style, marker="o", ms=3, color=color,
                     label=rule)
        ax1.set(xlabel="fraction of the unwanted training rows deleted", ylabel="test accuracy",
                title="forget domain")
        ax2.set(xlabel="fraction of the unwanted training rows deleted", ylabel="test accuracy",
                title="retained domain")
        ax1.legend(fontsize=7)
        fig.suptitle(report["downstream"]["classifier"], fontsize=9)
        fig.tight_layout()
        written.append(_save(fig, companion(path, "_downstream.png")))
    return written


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(report: dict, name: str) -> str:
    """The evaluation as a markdown page: setup, one row per rule, downstream table if any."""
    lines = [
        f"# Evaluation of `{report['source']}`",
        "",
        f"{report['n_unwanted']:,} unwanted rows (`{report['domains']['unwanted']}`), {report['n_retained']:,} "
        f"retained rows, {report['dims']} dims. kappa = KL(p1||p2) = {report['kappa']:.4g} nats; with nothing "
        f"deleted KL(p1||p_0) = {report['kl_removal_before']:.4g}, KL(p2||p_0) = {report['kl_preservation_before']:.4g}. "
        f"Halving target: KL(p1||p_f) >= {report['halving_alpha']:.4g} (halfway to full removal).",
        "",
        "| rule | halving fraction | halving budget | how the curve is computed |",
        "|---|---|---|---|",
    ]
    for rule, entry in report["rules"].items():
        lines.append(f"| {rule} | {entry['halving_fraction']:.3f} | {entry['halving_budget']:,} | "
                     f"{entry['curve_method']} |")
    lines.append(f"| full removal | 1.000 | {report['n_unwanted']:,} | KL(p1\\|\\|p_f) = kappa, KL(p2\\|\\|p_f) = 0 |")
    lines += ["", f"![budget curves]({name}_curves.png)", "", f"![Pareto frontier]({name}_frontier.png)"]
    down = report.get("downstream")
    if down:
        lines += ["", "## Downstream", "", f"{down['classifier']} on `{down['label_col']}`; "
                  f"{down['test_rows']['unwanted']:,} unwanted and {down['test_rows']['retained']:,} retained test rows "
                  f"({down['test_fraction']:.0%} held out by id hash). {down['metric']}. Random: {down['random']}.",
                  "", "| rule | halving fraction | forget accuracy by fraction deleted | retained accuracy range |",
                  "|---|---|---|---|"]
        for rule, entry in down["rules"].items():
            halving = "n/a" if entry["halving_fraction"] is None else f"{entry['halving_fraction']:.3f}"
            points = ", ".join(f"{p['budget'] / report['n_unwanted']:.2f}: {p['forget_accuracy']:.3f}"
                               for p in entry["points"])
            low, high = entry["retained_accuracy_range"]
            lines.append(f"| {rule} | {halving} | {points} | {low:.3f}-{high:.3f} |")
        lines += ["", f"![downstream]({name}_downstream.png)"]
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path: str) -> str:
    out = companion(path, ".md")
    with open(out, "w") as fh:
        fh.write(markdown(report, os.path.basename(os.path.splitext(path)[0])))
    return out
