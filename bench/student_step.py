"""What one training step of the example project's student costs, variant by variant.

    .venv/bin/python bench/student_step.py [--steps 60] [--batch 64] [--threads 2]

The student is the one `persea init` configures (Llama, 4 layers of 128, 16 heads of 8,
the `words` tokenizer in the compact chat format), trained with `persea distill`'s own
objective (`persea.distill.objective.compute_loss`, cross-entropy on the answers) on
toy-world training items drawn with the example project's skill shares. Four variants of
the same step run in one process and take turns step by step (the one that goes first
rotates), so load from elsewhere falls on all of them alike:

- attention: `sdpa` (PyTorch's fused kernel, the transformers default) or `eager`
  (plain matmuls and a softmax);
- what runs: the whole padded batch with the vocabulary projection at every position
  (`full`); the projection only where a loss reads it, the answer positions (`needed`);
  and that plus rows of similar length run together at their own length instead of every
  row at the longest one's (`grouped`), which is what `compute_loss` does for Llama.

Each step (collate, forward, loss, backward, clipping, AdamW) is timed on its own; the
first 10 are warm-up. It prints ms per step and each variant's speed relative to
`sdpa + full`, the student of earlier versions.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

SHARES = {"addition": 4, "reverse": 0.6, "sort": 4.5, "kb": 1, "count": 0.6, "convert": 1.2}
VARIANTS = [("sdpa", "full"), ("eager", "full"), ("eager", "needed"), ("eager", "grouped")]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from persea.distill import objective
    from persea.distill.batch import collate
    from persea.distill.student import train_student_tokenizer
    from persea.project import LossSpec
    from persea.skills import get_world

    torch.set_num_threads(a.threads)
    world = get_world()
    items = {s: world.make_items(s, "train", 2000, a.seed, True) for s in SHARES}
    corpus = [t for its in items.values() for it in its for t in (it.prompt, it.answer)]
    tok = train_student_tokenizer(corpus + ["user\n", "assistant\n"] * 100, 2000, "words",
                                  "compact")

    class Row:  # the fields of persea.distill.data.Example that collate reads for CE
        def __init__(self, it):
            head = tok.apply_chat_template([{"role": "user", "content": it.prompt}],
                                           add_generation_prompt=True, tokenize=True)
            if isinstance(head, dict) or hasattr(head, "input_ids"):
                head = head["input_ids"]
            tail = tok.encode(it.answer, add_special_tokens=False) + [tok.eos_token_id]
            self.input_ids = np.array(list(head) + tail)
            self.n_prompt = len(head)
            self.kd_pos = np.zeros(0, dtype=np.int64)
            self.chunk_ranges, self.chunk_teacher_logp = [], []

    rows = {s: [Row(it) for it in its] for s, its in items.items()}
    rng = random.Random(a.seed)
    names, shares = list(SHARES), list(SHARES.values())
    batches = [[rng.choice(rows[names[i]]) for i in rng.choices(range(len(names)), shares,
                                                                k=a.batch)]
               for _ in range(a.steps)]
    spec = LossSpec(ce=1.0, kd="none")
    models, optims = {}, {}
    for attn, head in VARIANTS:
        torch.manual_seed(a.seed)
        m = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=128, num_hidden_layers=4, num_attention_heads=16,
            num_key_value_heads=8, intermediate_size=384, max_position_embeddings=256,
            tie_word_embeddings=True, attn_implementation=attn))
        models[attn, head] = m.train()
        optims[attn, head] = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.05)
    fast_families, pass_cost = objective._HEAD_ONLY_WHERE_NEEDED, objective._PASS_COST
    times: dict = {v: [] for v in VARIANTS}
    tokens = padded = 0
    for step, rows_ in enumerate(batches):
        order = VARIANTS[step % 4:] + VARIANTS[:step % 4]
        for v in order:
            objective._HEAD_ONLY_WHERE_NEEDED = fast_families if v[1] != "full" else set()
            objective._PASS_COST = pass_cost if v[1] == "grouped" else 10**9  # one pass
            began = time.perf_counter()
            batch = collate(rows_, np.ones(len(rows_)), tok.pad_token_id)
            loss, _ = objective.compute_loss(models[v], batch, spec)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(models[v].parameters(), 1.0)
            optims[v].step()
            optims[v].zero_grad(set_to_none=True)
            if step >= 10:
                times[v].append(time.perf_counter() - began)
        if step >= 10:
            tokens += batch.tokens
            padded += batch.input_ids.numel()
    objective._HEAD_ONLY_WHERE_NEEDED, objective._PASS_COST = fast_families, pass_cost
    base = statistics.median(times[VARIANTS[0]])
    counted = a.steps - 10
    print(f"{counted} steps of {a.batch} rows each, {tokens / counted:.0f} real tokens per "
          f"step ({100 * (1 - tokens / padded):.0f}% of a padded batch is padding), "
          f"{a.threads} threads")
    print(f"{'attention':<10}{'pass':<12}{'ms/step p50':>12}{'speed vs sdpa+full':>20}")
    for v in VARIANTS:
        med = statistics.median(times[v])
        print(f"{v[0]:<10}{v[1]:<12}{med * 1000:>12.1f}{base / med:>19.2f}x")
    best = statistics.median(times[VARIANTS[-1]])
    print(f"the student's step (eager + grouped) is {base / best:.2f}x the earlier one "
          f"(sdpa + full)")


if __name__ == "__main__":
    main()
