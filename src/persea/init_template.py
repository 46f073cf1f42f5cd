"""The commented example project that `persea init` writes."""

EXAMPLE_PROJECT = """\
# persea project file. Every stage (`persea harvest`, ...) reads it from the current
# directory, or from the directory given with --project. Relative paths are resolved
# from this file's directory. Unknown fields are an error, not a silent default.
name: {name}
seed: 0

# The teachers to distil from: each needs a unique name and exactly one source:
#   builtin: qwen3-toy | gemma3-toy | gptoss-toy   (the tiny teachers shipped with persea)
#   path: ./models/my-model                        (a local Hugging Face model directory)
#   hub: Qwen/Qwen3-0.6B                           (needs the network or a local HF cache)
#   gguf: ./gemma-3-270m-Q4_K_M.gguf               (a GGUF file, loaded by transformers)
#   endpoint: http://127.0.0.1:8000/v1             (an OpenAI-compatible API, black box;
#     model: NAME, api_key_env: OPENAI_API_KEY)     also give the model name it serves)
teachers:
  - name: qwen3-toy      # Qwen3 architecture, byte-level BPE
    builtin: qwen3-toy
  - name: gemma3-toy     # Gemma3 architecture, Unigram (SentencePiece-style)
    builtin: gemma3-toy
  - name: gptoss-toy     # gpt-oss mixture of experts, character-level tokenizer
    builtin: gptoss-toy

# What the teachers answer: toy-world items (split, how many per skill), or
# `file: prompts.jsonl` with one {{"id": ..., "prompt": ..., "skill": ...}} object a line.
prompts:
  toyworld:
    split: train
    per_skill: 400     # at most: kb holds 556 train prompts in all

# Harvest: every teacher answers every prompt; the cache keeps, per token, its id,
# character span, chosen log-probability and the top_k alternatives.
harvest:
  out: cache/harvest
  top_k: 32
  max_new_tokens: 24
  batch_size: 48
  shard_size: 96
  threads: 2           # torch threads; fixed so the cache's bytes do not depend on the machine

# Distil: a Llama-architecture student with its own byte-level BPE tokenizer, trained on
# the harvest. 300 ids is nearly character level (256 bytes, the specials, a few merges):
# on the toy world that learns reversing, counting and digit-wise sums far sooner than 512
# ids of merged letter pairs (reverse 0.84 vs 0.26 after 2000 steps; docs/distill.md).
# Loss = ce * cross-entropy + kd_weight * logit KD (xtok: across tokenizers)
# + alm_weight * approximate likelihood matching. Weighting decides how much each teacher's
# response counts: uniform, confidence, verified (checker accepts), best_teacher (per skill,
# on the dev split); several multiply. Also there (commented out below): a tokenizer of
# frequent words plus single characters, skill-balanced batches, and on-policy steps in
# which the teachers grade the student's own answers. See docs/distill.md.
distill:
  out: runs/student
  student: {{vocab_size: 300, hidden_size: 128, layers: 4, heads: 4, intermediate_size: 384}}
  loss: {{ce: 1.0, kd: xtok, kd_weight: 1.0, temperature: 1.0, alm_weight: 0.0}}
  weighting: [verified]
  steps: 2000
  batch_size: 32
  lr: 0.003
  checkpoint_every: 250
  threads: 2           # torch threads; fixed so the weights do not depend on the machine
  # student: {{tokenizer: words, chat_format: compact, vocab_size: 2000, hidden_size: 128,
  #           layers: 4, heads: 4, intermediate_size: 384}}
  # skill_mix: equal   # or {{addition: 2, sort: 1.5, ...}}; default: as the kept examples
  # on_policy: {{lmbda: 0.3, start: 0.5, target: sampled, combine: best,
  #             prompts_per_skill: 3000, max_new_tokens: 16}}

# Release: the bar the student must clear before it may be served or sealed. `persea eval`
# scores the student and every teacher on the toy world's test split, `persea scorecard`
# shows them side by side with 95% bootstrap intervals, and `persea gate` checks these
# rules one by one (exit 1 when one fails; a forced release is recorded with who and why).
# A rule is one of: beat: NAME (ahead of NAME beyond the interval), within_best_teacher:
# POINTS, floor: SCORE; each on `metrics: core` (default), `skills`, or a list of names
# such as [toyworld/kb]. See docs/evaluate.md. The bar below is the one persea is built
# to clear: ahead of every teacher overall, and within 10 points of the best teacher on
# every skill.
release:
  candidate: student
  core_metrics: [toyworld/overall]
  rules:
    - beat: qwen3-toy
    - beat: gemma3-toy
    - beat: gptoss-toy
    - within_best_teacher: 10
      metrics: skills
"""
