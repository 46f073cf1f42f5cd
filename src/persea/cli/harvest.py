"""`persea harvest`'s tables: the skill routing before generating, the summary after."""

from __future__ import annotations

from rich.table import Table


def routing_table(routing, answered: dict[str, int], prompts: int) -> Table:
    """Teacher x skill: the probe accuracy (with a probe) and whether the teacher answers
    that skill's prompts, then how many prompts it answers in all."""
    probe = routing.probe
    if probe is not None:
        title = (f"routing: accuracy on {probe['per_skill']} {probe['split']} items per skill; "
                 f"yes: answers the skill's prompts (min {routing.setting['min_accuracy']:g}, "
                 f"within {routing.setting['within']:g} of the best)")
    else:
        title = "routing: route.skills; yes: answers the skill's prompts"
    table = Table(title=title, title_justify="left")
    table.add_column("teacher", no_wrap=True)
    skills = list(routing.answers)
    for skill in skills:
        table.add_column(skill, justify="right", no_wrap=True)
    table.add_column("prompts", justify="right", no_wrap=True)
    for name in routing.teachers:
        cells = []
        for skill in skills:
            says = "yes" if name in routing.answers[skill] else "no"
            if skill in routing.everyone:
                says += "*"
            cells.append(f"{probe['accuracy'][skill][name]:.2f} {says}" if probe else says)
        table.add_row(name, *cells, f"{answered[name]}/{prompts}")
    return table


def summary_table(result) -> Table:
    """Per teacher: the prompts it answered, tokens, bytes per token, what quantisation
    lost, exact-match accuracy, and shards written/kept."""
    routed = result.routing is not None
    table = Table(title=f"harvest: {result.prompts} prompts x {len(result.teachers)} teachers")
    table.add_column("teacher", no_wrap=True)
    for col in ("answers", "tokens", "B/token", "max|Δlp|", "KL", "exact", "new/kept"):
        table.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    for t in result.teachers:
        acc = f"{t.correct / t.checked:.1%}" if t.checked else "n/a"
        table.add_row(t.name, f"{t.responses}/{result.prompts}" if routed else str(t.responses),
                      str(t.tokens), f"{t.bytes_per_token:.1f}",
                      f"{t.stats.get('max_abs_logprob', 0):.4f}",
                      f"{t.stats.get('kl_topk_mean', 0):.0e}", acc,
                      f"{t.shards_written}/{t.shards_skipped}")
    return table
