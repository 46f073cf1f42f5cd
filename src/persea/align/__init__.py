"""Cross-tokenizer alignment: token ids to text bytes, shared boundaries, chunks."""

from persea.align.carry import carry_topk
from persea.align.spans import Chunk, aligned_starts, boundaries, chunks
from persea.align.tokens import context_bound, special_ids, token_bytes, vocab_map

__all__ = ["Chunk", "carry_topk", "aligned_starts", "boundaries", "chunks", "context_bound",
           "special_ids", "token_bytes", "vocab_map"]
