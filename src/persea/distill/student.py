"""The student: its own tokenizer (trained on the harvest text) and its own architecture.

By default a byte-level BPE tokenizer in the Llama 3 chat format and a small
Llama-architecture model; the tokenizer's kind and chat format and both sizes come from
the project file's `distill.student`. Or a pretrained base model (`path:`, `hub:` or
`gguf:`), loaded by the teachers' loaders, which keeps its own tokenizer and chat template.
"""

from __future__ import annotations

from pathlib import Path

import torch

from persea.cache import reader
from persea.distill.tokenizer import train_bpe, train_words_and_chars, wrap
from persea.errors import PerseaError
from persea.models.sources import load_gguf, load_hf_dir, load_hub
from persea.models.templates import COMPACT, LLAMA

WHERE = "distill.student"
# For a base model without a chat template: plain role lines, so prompts still read as a
# conversation and the response ends at the tokenizer's end-of-sequence token.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}")


def harvest_corpus(harvest: reader.Harvest) -> list[str]:
    """Every prompt and teacher response in a finished harvest (`reader.open_harvest`), and
    the chat template's role names: what the student tokenizer is trained on."""
    return reader.corpus(harvest) + ["user\n", "assistant\n"] * 100


def train_student_tokenizer(corpus: list[str], vocab_size: int, kind: str = "bpe",
                            chat_format: str = "llama", min_word_count: int = 4,
                            split_compounds: bool = False):
    """The student's tokenizer of `kind` (`bpe` or `words`), in the Llama 3 or the compact
    chat format."""
    fmt = COMPACT if chat_format == "compact" else LLAMA
    if kind == "words":
        return wrap(train_words_and_chars(corpus, fmt, vocab_size, min_word_count,
                                          split_compounds), fmt)
    return wrap(train_bpe(corpus, fmt, vocab_size=vocab_size), fmt)


def check_encodes(tokenizer, texts: list[str], where: str,
                  advice: str = "use a byte-level tokenizer or retrain it on the harvest text"
                  ) -> None:
    """A student tokenizer must encode every harvested text without unknown tokens and
    decode it back, or the student could not learn from it."""
    unk = tokenizer.unk_token_id
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        back = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if (unk is not None and unk in ids) or back != text:
            raise PerseaError(f"{where}: the student tokenizer cannot encode harvested text "
                              f"{text[:40]!r} (it decodes back as {back[:40]!r}); {advice}")


def build_student_model(tokenizer, hidden: int, layers: int, heads: int, intermediate: int,
                        seed: int, kv_heads: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads or max(1, heads // 2),
        intermediate_size=intermediate, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # plain matmul attention: with many narrow heads over short sequences it trains
        # about 20% faster on CPU than the fused SDPA kernel (bench/student_step.py)
        attn_implementation="eager")
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def load_pretrained_student(spec, resolve) -> tuple[object, object, list[str]]:
    """(model, tokenizer, notes) of a pretrained `distill.student`; `resolve` turns a
    project-relative path into a Path. Loading errors name `distill.student`."""
    try:
        if spec.path is not None:
            lm = load_hf_dir(WHERE, resolve(spec.path))
        elif spec.hub is not None:
            lm = load_hub(WHERE, spec.hub, spec.revision)
        else:
            lm = load_gguf(WHERE, resolve(spec.gguf))
    except PerseaError as err:  # the loaders name a teacher; here it is the student field
        raise PerseaError(WHERE + err.message.removeprefix(f"teacher {WHERE!r}")) from None
    model, tok = lm.model, lm.tokenizer
    what = f"{WHERE} ({spec.source}: {getattr(spec, spec.source)})"
    if not tok.is_fast:
        raise PerseaError(f"{what}: its tokenizer is not a fast (Rust) tokenizer, which the "
                          "alignment needs for character offsets; give a model with "
                          "tokenizer.json")
    if tok.eos_token_id is None:
        raise PerseaError(f"{what}: its tokenizer has no eos_token, so a reply could not end; "
                          "set eos_token in its tokenizer_config.json")
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tok) > rows:
        raise PerseaError(f"{what}: its tokenizer has {len(tok)} ids but the model only "
                          f"{rows} embedding rows")
    notes = []
    if not tok.chat_template:
        tok.chat_template = PLAIN_TEMPLATE
        notes.append(f"{what} has no chat template; using a plain one "
                     "(`user: ...` / `assistant: `)")
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.train(), tok, notes
