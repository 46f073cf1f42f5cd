"""Score a model on toy-world items: exact-match accuracy per skill, with greedy generation
through a model directory's own chat template.

    >>> items = [it for s in SKILLS for it in items_up_to(s, "test", 200)]
    >>> accuracy_by_skill(lambda ps: hf_generate("teachers/qwen3-toy", ps), items)
    {'addition': 0.93, 'reverse': 0.0, ...}
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

from persea.errors import PerseaError
from persea.toyworld.dataset import Item, make_items
from persea.toyworld.skills import get_skill

GenerateFn = Callable[[list[str]], list[str]]

_PROBE = 1000  # larger than the smallest skills' splits, small enough to fail fast


def items_up_to(skill: str, split: str, n: int, seed: int = 0) -> list[Item]:
    """`make_items(skill, split, n, seed)`, or every item of the split when it has fewer.

    Two skills are small (kb and convert have a few hundred train items and under a hundred
    test items); asking them for more raises, so the split's real size is read off the error
    and asked for instead. A probe of `_PROBE` items first keeps a failing call cheap.
    """
    probe = min(n, _PROBE)
    try:
        items = make_items(skill, split, probe, seed)
    except PerseaError as err:
        found = re.search(r"found (\d+)", str(err))
        if not found:
            raise
        return make_items(skill, split, int(found.group(1)), seed)
    return items if probe == n else make_items(skill, split, n, seed)


def accuracy_by_skill(generate_fn: GenerateFn, items: Sequence[Item]) -> dict[str, float]:
    """Fraction of items whose generated answer passes the skill's exact check, per skill.

    `generate_fn` maps a list of prompts to a list of responses; it is called once with
    every prompt. Skills appear in the order they first occur in `items`.
    """
    responses = generate_fn([it.prompt for it in items])
    if len(responses) != len(items):
        raise ValueError(f"generate_fn returned {len(responses)} responses "
                         f"for {len(items)} prompts")
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for item, response in zip(items, responses):
        total[item.skill] += 1
        right[item.skill] += get_skill(item.skill).check(item.answer, response)
    return {skill: right[skill] / total[skill] for skill in total}


def generate_with(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 24,
                  batch_size: int = 64) -> list[str]:
    """Greedy replies of a loaded model to single-turn user `prompts`, batched with left
    padding; special tokens (the end of turn among them) are dropped from the replies."""
    import torch

    tokenizer.padding_side = "left"
    replies: list[str] = []
    model.eval()
    for start in range(0, len(prompts), batch_size):
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                          add_generation_prompt=True, tokenize=False)
            for p in prompts[start:start + batch_size]
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        replies.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return replies


def hf_generate(model_dir: str | Path, prompts: Sequence[str], max_new_tokens: int = 24,
                batch_size: int = 64) -> list[str]:
    """Load a transformers model directory (float32, CPU) and reply greedily to `prompts`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return generate_with(model, tokenizer, list(prompts), max_new_tokens, batch_size)
