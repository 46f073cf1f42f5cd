"""What a distilled model carries of its teachers' licences, as text: the NOTICE file (the
lines the licences word) and a model card section (each teacher's licence, the decision,
the obligations with their sources, any override and its reason). Written into a sealed
directory by persea.seal; see docs/licences.md.
"""

from __future__ import annotations

from persea.licences.policy import Verdict


def notice_text(model: str, verdicts: list[Verdict]) -> str:
    """The NOTICE file of `model`: the notices its teachers' licences require, by teacher."""
    lines = [f"NOTICE for {model}", "",
             "This model was distilled from the teachers below. The notices their licences",
             "require of a model made from them follow, teacher by teacher.", ""]
    worded = [v for v in verdicts if v.notices]
    for v in worded:
        lines += [f"{v.teacher} ({v.license}):", *[f"  {n}" for n in v.notices], ""]
    if not worded:
        lines += ["None of the teachers' licences words a notice.", ""]
    rest = [v for v in verdicts if not v.notices]
    if rest and worded:
        lines += ["No notice required by: " + ", ".join(f"{v.teacher} ({v.license})"
                                                      for v in rest), ""]
    return "\n".join(lines)


def card_text(model: str, verdicts: list[Verdict], sealed_id: str | None = None) -> str:
    """A Markdown model card section on the licences of `model`'s teachers."""
    lines = [f"# {model}", ""]
    if sealed_id:
        lines += [f"Sealed model `{sealed_id}`.", ""]
    lines += ["## Teachers and their licences", "",
              "What each teacher's licence asks of a model distilled from it and served as a "
              "paid API, as persea's licence policy read it when the model was sealed "
              "(docs/licences.md). This is a record, not legal advice: the licences decide.",
              "", "| teacher | licence | declared in | decision |", "|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v.teacher} | {v.license} | {v.where} | {v.shown} |")
    lines.append("")
    for v in verdicts:
        if not (v.obligations or v.override):
            continue
        lines += [f"### {v.teacher} ({v.license})", ""]
        if v.rule is not None:
            lines += [f"{v.rule.asks}.", "", f"Source: {v.rule.source} <{v.rule.url}>.", ""]
        if v.override is not None and v.refusal:
            lines += [f"The policy refuses it ({v.refusal}); used all the same, for this "
                      f"recorded reason: {v.override}", ""]
        lines += [f"- {o.text}" + (f": \"{o.notice}\"" if o.notice else "")
                  for o in v.obligations]
        lines.append("")
    if not any(v.obligations or v.override for v in verdicts):
        lines += ["No teacher's licence puts an obligation on this model.", ""]
    return "\n".join(lines)
