"""PNG bar chart of a sensitivity table (``intq.report.sensitivity``): one bar per quantizer.

Top panel: logit SQNR with only that quantizer on (low bars = the quantizers that hurt alone).
Bottom panel: logit SQNR gained by switching only that quantizer off, over the all-on model
(high bars = where higher precision pays). Weights and activations in two colours, graph order
along the x axis. matplotlib loads on first use (Agg backend, no display needed).
"""

from __future__ import annotations

import io

from intq.report.sensitivity import Sensitivity

__all__ = ["sensitivity_png"]

_COLOURS = {"weight": "tab:blue", "activation": "tab:orange"}


def sensitivity_png(table: Sensitivity, title: str = "") -> bytes:
    """The two-panel bar chart of ``table`` as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.rows
    idx = range(len(rows))
    colours = [_COLOURS[r.kind] for r in rows]
    width = max(8.0, 0.09 * len(rows))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width, 7), sharex=True)
    top.bar(idx, [_finite(r.only_on_sqnr_db) for r in rows], color=colours)
    top.axhline(table.all_on_sqnr_db, color="black", lw=0.8, ls="--", label="all on")
    top.set_ylabel("logit SQNR dB\n(only this on)")
    bottom.bar(idx, [_finite(r.only_off_sqnr_db) - table.all_on_sqnr_db for r in rows],
               color=colours)
    bottom.axhline(0, color="black", lw=0.8)
    bottom.set_ylabel("SQNR gain dB\n(only this off)")
    bottom.set_xticks(list(idx), [r.name for r in rows], rotation=90, fontsize=5)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _COLOURS.values()]
    top.legend([*handles, top.lines[0]], [*_COLOURS, "all on"], fontsize=8, loc="lower right")
    baseline = (f"{table.samples} samples; all on: {table.all_on_sqnr_db:.1f} dB, "
                f"top-1 agreement {table.all_on_agreement:.3f}")
    top.set_title(f"{title or 'quantizer sensitivity'}\n{baseline}", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def _finite(value: float, cap: float = 120.0) -> float:
    """An infinite SQNR (a quantizer that changes nothing) drawn at ``cap`` dB."""
    return min(value, cap)
