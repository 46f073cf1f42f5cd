"""`persea gate`: the verdict of the release policy, printed rule by rule and recorded."""

from __future__ import annotations

from persea.evaluate.gate import evaluate_gate
from persea.evaluate.records import store_for
from persea.evaluate.release import write_gate_record
from persea.project import database_url, load_project


def run_gate(project_path, out) -> bool:
    """Print each rule as passed or failed with its numbers, write the gate record, and
    return whether the gate passed."""
    project = load_project(project_path)
    result = evaluate_gate(project, store_for(project))
    out.print(f"release gate for [bold]{result.candidate}[/bold] "
              f"(weights {result.fingerprint[:12]})", highlight=False, soft_wrap=True)
    for rule in result.rules:
        mark = "[green]PASS[/green]" if rule.passed else "[red]FAIL[/red]"
        out.print(f"{mark} {rule.rule}", highlight=False, soft_wrap=True)
        for c in rule.checks:
            sub = "[green]ok[/green]  " if c.passed else "[red]no[/red]  "
            out.print(f"     {sub}{c.metric}: {c.detail}", highlight=False, soft_wrap=True)
    record = write_gate_record(project, result, database_url(project=project))
    verdict = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
    out.print(f"gate {verdict}: record {record['id']} "
              f"({project.root / 'gates' / (record['id'] + '.json')})", highlight=False, soft_wrap=True)
    return result.passed
