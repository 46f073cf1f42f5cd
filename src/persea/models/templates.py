"""Chat formats of four model families: Qwen, Gemma and gpt-oss (which the toy world's
built-in teachers stand in for), Llama 3 and a compact format (the student's own).

Each is a Jinja chat template stored in the teacher's tokenizer config, applied with
`tokenizer.apply_chat_template`, exactly as for a real checkpoint. They differ the way the
real ones do: Qwen's ChatML, Gemma's turns with a beginning-of-sequence token in front, and
gpt-oss's "harmony" messages with a channel. A distiller must strip each of them off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatFormat:
    family: str
    template: str
    special_tokens: tuple[str, ...]
    end_of_turn: str  # the token a response ends with; generation stops there
    pad: str
    bos: str | None = None


QWEN = ChatFormat(
    family="qwen",
    template=(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    end_of_turn="<|im_end|>",
    pad="<|endoftext|>",
)

GEMMA = ChatFormat(
    family="gemma",
    template=(
        "{{ bos_token }}{% for m in messages %}<start_of_turn>"
        "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}"
        "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
        "{% endif %}"
    ),
    special_tokens=("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
    end_of_turn="<end_of_turn>",
    pad="<pad>",
    bos="<bos>",
)

HARMONY = ChatFormat(
    family="gpt-oss",
    template=(
        "{% for m in messages %}<|start|>{{ m['role'] }}<|message|>{{ m['content'] }}<|end|>"
        "{% endfor %}{% if add_generation_prompt %}<|start|>assistant<|channel|>final"
        "<|message|>{% endif %}"
    ),
    special_tokens=("<|endoftext|>", "<|start|>", "<|message|>", "<|end|>", "<|channel|>",
                    "<|return|>"),
    end_of_turn="<|return|>",
    pad="<|endoftext|>",
)

# The student's own format (Llama 3 style): persea's models are Llama-architecture.
LLAMA = ChatFormat(
    family="llama",
    template=(
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}"
    ),
    special_tokens=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eot_id|>"),
    end_of_turn="<|eot_id|>",
    pad="<|end_of_text|>",
    bos="<|begin_of_text|>",
)

# A compact format for a student built from scratch: one special token per role and one to
# end a turn, so a short prompt costs four tokens of format instead of Llama 3's eleven. On
# toy-world prompts of 10-25 tokens that is a quarter of every training sequence.
COMPACT = ChatFormat(
    family="compact",
    template=(
        "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    ),
    special_tokens=("<|begin_of_text|>", "<|end_of_text|>", "<|system|>", "<|user|>",
                    "<|assistant|>", "<|end|>"),
    end_of_turn="<|end|>",
    pad="<|end_of_text|>",
    bos="<|begin_of_text|>",
)

FORMATS = {f.family: f for f in (QWEN, GEMMA, HARMONY, LLAMA, COMPACT)}
