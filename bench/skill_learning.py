"""How fast a student shape learns each toy-world skill from the reference answers.

    .venv/bin/python bench/skill_learning.py --heads 16 --steps 3000 --batch 64
    .venv/bin/python bench/skill_learning.py --mix addition=1 --heads 4 --steps 3000
    .venv/bin/python bench/skill_learning.py --mix addition=1 --heads 16 --steps 3000

This is the ceiling of distillation for a student shape: every training answer is the toy
world's own (as if every teacher were always right), so what a student cannot learn here
in N steps it will not learn from the teachers in N steps either. It trains the student
that `persea distill` builds (Llama architecture, the `words` or `bpe` tokenizer trained on
the training text, the compact or Llama chat format) with answer-only cross-entropy,
batches drawn skill by skill with `--mix` shares, AdamW with warm-up and cosine decay, and
every `--eval-every` steps scores greedy answers on `--eval-n` test items per skill.

It prints one line per evaluation (step, loss, ms per step, accuracy per skill). Use it to
choose a shape or a mix before a harvest; docs/distill.md records what it showed.
"""

from __future__ import annotations

import argparse
import math
import random
import time


def _pairs(text: str, cast) -> dict:
    return {k: cast(v) for k, v in (x.split("=") for x in text.split(",") if x)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", choices=["words", "bpe"], default="words")
    p.add_argument("--chat-format", choices=["compact", "llama"], default="compact")
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--split-compounds", action="store_true",
                   help="words tokenizer: write a word made of other kept words as its parts")
    p.add_argument("--min-word-count", type=int, default=4,
                   help="words tokenizer: how often a word must occur to be one token")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=None, help="default: half the heads")
    p.add_argument("--intermediate", type=int, default=384)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--mix", default="addition=3,reverse=1,sort=2,kb=1.5,count=1,convert=0.5",
                   help="skill=share,...: each batch row draws a skill with these shares")
    p.add_argument("--items", default="addition=20000,reverse=5000,sort=5000,kb=600,"
                   "count=5000,convert=600", help="skill=n: distinct training items")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-n", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    import torch

    from persea.distill.student import build_student_model, train_student_tokenizer
    from persea.skills import get_world

    torch.set_num_threads(a.threads)
    world = get_world()
    mix, counts = _pairs(a.mix, float), _pairs(a.items, int)
    train = {s: world.make_items(s, "train", counts.get(s, 1000), a.seed, True) for s in mix}
    test = {s: world.make_items(s, "test", a.eval_n, 0, True) for s in world.skills}
    corpus = [t for items in train.values() for it in items for t in (it.prompt, it.answer)]
    tok = train_student_tokenizer(corpus + ["user\n", "assistant\n"] * 100, a.vocab,
                                  a.tokenizer, a.chat_format, a.min_word_count,
                                  a.split_compounds)
    model = build_student_model(tok, a.hidden, a.layers, a.heads, a.intermediate, a.seed,
                                a.kv_heads)
    print(f"parameters {sum(q.numel() for q in model.parameters()):,}, vocabulary {len(tok)}",
          flush=True)

    def render(prompt: str) -> str:
        return tok.apply_chat_template([{"role": "user", "content": prompt}],
                                       add_generation_prompt=True, tokenize=False)

    def encode(it) -> tuple[list[int], list[int]]:
        head = tok.encode(render(it.prompt), add_special_tokens=False)
        tail = tok.encode(it.answer, add_special_tokens=False) + [tok.eos_token_id]
        return head + tail, [-100] * len(head) + tail

    data = {s: [encode(it) for it in items] for s, items in train.items()}
    names = list(data)
    shares = [mix[s] for s in names]
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98),
                            weight_decay=a.weight_decay)
    rng = random.Random(a.seed)

    def lr_at(step: int) -> float:
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        done = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * done)))

    def evaluate() -> dict[str, float]:
        model.eval()
        scores = {}
        for skill, items in test.items():
            batch = tok([render(it.prompt) for it in items], return_tensors="pt", padding=True,
                        add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=24, do_sample=False)
            texts = tok.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                     skip_special_tokens=True)
            scores[skill] = sum(world.skills[skill].check(it.answer, t)
                                for t, it in zip(texts, items)) / len(items)
        model.train()
        return scores

    spent, recent = 0.0, []
    for step in range(a.steps):
        began = time.perf_counter()
        rows = [rng.choice(data[names[i]])
                for i in rng.choices(range(len(names)), weights=shares, k=a.batch)]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (x, y) in enumerate(rows):
            ids[r, :len(x)], labels[r, :len(y)], mask[r, :len(x)] = (
                torch.tensor(x), torch.tensor(y), 1)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        target = labels[:, 1:]
        keep = target != -100
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[:, :-1][keep]),
                                                 target[keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        spent += time.perf_counter() - began
        recent = (recent + [loss.item()])[-50:]
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            acc = evaluate()
            print(f"step {step + 1} loss {sum(recent) / len(recent):.3f} "
                  f"ms/step {1000 * spent / (step + 1):.0f} "
                  + " ".join(f"{k}={v:.2f}" for k, v in acc.items())
                  + f" mean={sum(acc.values()) / len(acc):.2f}", flush=True)


if __name__ == "__main__":
    main()
