"""The end-of-run collapse check: a run whose classes share a latent code, or whose validation accuracy fell far
below its own peak, is not a usable model. ``python -m training`` says so in one line and exits 1; the export refuses
the run with the same line (``metrics.json`` records it under ``"collapse"``)."""

from __future__ import annotations

# Final validation accuracy below chance + DROP_SHARE * (peak - chance) counts as "far below its own peak": the run
# lost more than half of what it had learnt above chance (Fashion-MNIST's quick runs lose under 1 % of it).
DROP_SHARE = 0.5
ADVICE = (
    "the run directory keeps what was trained; train again with more steps (--min-steps, --epochs), a smaller "
    "--gamma-cap or a lower --lr (README, 'Train on your own images')"
)


class CollapsedRunError(ValueError):
    """The run collapsed (see :func:`collapse_verdict`); exporting it is refused."""


def collapse_verdict(metrics: dict, history: list[dict], variant: str) -> str | None:
    """One line saying how the finished run collapsed, or ``None`` when it did not.

    Two tests: ``bin_enc`` runs need as many distinct class codes on the training split as classes (the modal code
    of each predicted class, as ``metrics.json`` counts them); every run needs a final validation accuracy of at least
    ``chance + DROP_SHARE * (peak - chance)``, where ``peak`` is the best epoch's and chance ``1 / classes``.
    """
    k = int(metrics["num_classes"])
    problems = []
    codes = (metrics.get("train") or {}).get("distinct_class_codes")
    if variant == "bin_enc" and codes is not None and codes < k:
        problems.append(f"{codes} distinct class codes for {k} classes")
    vals = [float(r["val_acc"]) for r in history if "val_acc" in r]
    if vals and "val_acc" in metrics:
        peak, final, chance = max(vals), float(metrics["val_acc"]), 1.0 / k
        if final < chance + DROP_SHARE * (peak - chance):
            problems.append(
                f"validation accuracy {final:.4f} far below its peak {peak:.4f} "
                f"(epoch {vals.index(peak) + 1}; chance {chance:.4f})"
            )
    if not problems:
        return None
    return f"the run collapsed: {'; '.join(problems)}; {ADVICE}"


def refuse_collapsed(metrics: dict) -> None:
    """Raise :class:`CollapsedRunError` with the recorded verdict when ``metrics.json`` records a collapse."""
    verdict = metrics.get("collapse")
    if verdict:
        raise CollapsedRunError(str(verdict))
