"""The curve figures (matplotlib, optional): quality vs N per length, vs length at the
largest N, and vs tokens spent."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bestofn.console import warn

ORACLE_LINE = "oracle_best"
"""Expected best quality in a random k-subset (the ceiling)."""
POOL_MEAN_LINE = "pool_mean"
"""A uniformly random pick: the pool's mean quality, flat in k."""


def plot(rows: Sequence[Mapping[str, Any]], out_dir: Path, *, title: str) -> list[Path]:
    """Three PNG figures: the gain over best-of-1 vs N per length (paired intervals), quality
    vs length at the largest N, and quality vs the tokens really spent (with intervals)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warn("matplotlib is not installed (pip install -e '.[plot]'); CSV written, no figures")
        return []
    lengths = sorted({int(r["length"]) for r in rows})
    scorers = list(dict.fromkeys(str(r["scorer"]) for r in rows))
    styles = {ORACLE_LINE: ("black", "--"), POOL_MEAN_LINE: ("grey", ":")}
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    colours = {s: styles.get(s, (palette[i % len(palette)], "-")) for i, s in enumerate(scorers)}

    def series(scorer: str, length: int) -> list[Mapping[str, Any]]:
        return sorted(
            (r for r in rows if r["scorer"] == scorer and r["length"] == length),
            key=lambda r: r["k"],
        )

    paths = []
    fig, axes = plt.subplots(
        1, len(lengths), figsize=(4.2 * len(lengths), 3.8), sharey=True, squeeze=False
    )
    for ax, length in zip(axes[0], lengths, strict=True):
        ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        for scorer in scorers:
            if scorer == POOL_MEAN_LINE:
                continue  # it is the zero line
            data = series(scorer, length)
            # Candidates actually drawn: k, or fewer on average with adaptive N.
            ks = [r.get("drawn", r["k"]) for r in data]
            colour, dash = colours[scorer]
            gains = [r["gain_over_best_of_1"] for r in data]
            ax.plot(ks, gains, dash, color=colour, label=scorer, marker="o", ms=3)
            ax.fill_between(
                ks,
                [r["gain_ci_low"] for r in data],
                [r["gain_ci_high"] for r in data],
                color=colour,
                alpha=0.12,
            )
        ax.set_xscale("log", base=2)
        ax.set_title(f"max {length} tokens")
        ax.set_xlabel("candidates drawn (N)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("gain over best-of-1 (paired 95% CI)")
    axes[0][-1].legend(fontsize=8)
    # Wrapped to the figure's width (about 11 characters per inch at this size): one panel
    # is narrower than a title naming model, data set, metric and pool.
    fig.suptitle(textwrap.fill(title, width=int(11 * 4.2 * len(lengths))), fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "quality_vs_n.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    k_max = max(int(r["k"]) for r in rows)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for scorer in scorers:
        data = [next(r for r in series(scorer, length) if r["k"] == k_max) for length in lengths]
        colour, dash = colours[scorer]
        ax.errorbar(
            lengths,
            [r["mean"] for r in data],
            yerr=[
                [r["mean"] - r["ci_low"] for r in data],
                [r["ci_high"] - r["mean"] for r in data],
            ],
            fmt=dash,
            color=colour,
            marker="o",
            ms=3,
            capsize=3,
            label=scorer,
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("max output tokens")
    ax.set_ylabel(f"quality at N={k_max}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "quality_vs_length.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for scorer in scorers:
        colour, dash = colours[scorer]
        for j, length in enumerate(lengths):
            data = series(scorer, length)
            # What was really spent per instruction for best-of-k: k candidates' generated
            # tokens plus their scoring tokens (prompt + reply), as measured.
            tokens = [r["generated_tokens"] + r["reconstruction_tokens"] for r in data]
            means = [r["mean"] for r in data]
            ax.errorbar(
                tokens,
                means,
                yerr=[
                    [m - r["ci_low"] for m, r in zip(means, data, strict=True)],
                    [r["ci_high"] - m for m, r in zip(means, data, strict=True)],
                ],
                fmt=dash,
                color=colour,
                marker="os^D"[j % 4],
                ms=3,
                capsize=2,
                alpha=0.4 + 0.6 * (j + 1) / len(lengths),
                label=scorer if j == len(lengths) - 1 else None,
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens spent per instruction (generation + scoring)")
    ax.set_ylabel("quality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}; markers: lengths {', '.join(map(str, lengths))}", fontsize=9)
    fig.tight_layout()
    paths.append(out_dir / "quality_vs_tokens.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
