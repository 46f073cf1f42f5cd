"""A pretrained student: a base model from a directory keeps its vocabulary and learns;
a source that cannot be trained here is refused in one line, with nothing written."""

from __future__ import annotations


import pytest
import torch
import yaml

from persea.distill.run import run_distill
from persea.errors import PerseaError
from persea.project import load_project, parse_project
from tests.cli_helpers import run_cli


def build_base(directory, chat_template: bool = True, words_only: bool = False):
    """A 2-layer Llama of hidden size 32 with a byte-level BPE tokenizer (or, with
    `words_only`, a word-level one that knows a handful of words) built here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from persea.toyworld import make_mixture

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    if words_only:
        vocab = {w: i for i, w in enumerate([*specials, "what", "is", "the"])}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(
            [f"{i.prompt} {i.answer}" for i in make_mixture("train", 20)],
            trainers.BpeTrainer(vocab_size=320, special_tokens=specials, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<unk>")
    if chat_template:
        fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                              "{{ m['content'] }}<|im_end|>\n{% endfor %}"
                              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(fast) + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id))
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def set_student(project_dir, student):
    data = yaml.safe_load((project_dir / "persea.yaml").read_text())
    data["distill"]["student"] = student
    (project_dir / "persea.yaml").write_text(yaml.safe_dump(data))


def weights(directory):
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_a_base_model_keeps_its_vocabulary_and_its_weights_change(project_copy, tmp_path):
    base = build_base(tmp_path / "base")
    set_student(project_copy, {"path": str(base)})
    result = run_distill(load_project(project_copy))
    assert result.notes == []
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(result.student_dir).vocab_size == \
        AutoConfig.from_pretrained(base).vocab_size  # not resized to the tokenizer
    assert len(AutoTokenizer.from_pretrained(result.student_dir)) == \
        len(AutoTokenizer.from_pretrained(base))
    assert not (result.run_dir / "tokenizer").exists()  # no tokenizer trained
    before, after = weights(base), weights(result.student_dir)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert {t.teacher for t in result.transfer} == {"alpha", "beta"}
    assert all(t.target_positions > 0 for t in result.transfer)


def test_a_base_model_without_a_chat_template_gets_a_plain_one(project_copy, tmp_path,
                                                               capsys, monkeypatch):
    base = build_base(tmp_path / "base", chat_template=False)
    set_student(project_copy, {"path": str(base)})
    data = yaml.safe_load((project_copy / "persea.yaml").read_text())
    data["distill"]["steps"] = 2
    (project_copy / "persea.yaml").write_text(yaml.safe_dump(data))
    code, out, err = run_cli(capsys, monkeypatch, "distill", "-p", str(project_copy),
                             "--eval-per-skill", "0")
    assert code == 0, err
    assert f"note: distill.student (path: {base}) has no chat template; using a plain one" \
        in " ".join(err.split())
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(project_copy / "runs" / "student" / "student")
    assert saved.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                     add_generation_prompt=True) == "user: hi\nassistant: "


def _not_a_causal_lm(tmp_path):
    from transformers import ViTConfig

    d = build_base(tmp_path / "vit")
    (d / "config.json").unlink()
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=64).save_pretrained(d)
    return {"path": str(d)}


@pytest.mark.parametrize("case, match", [
    ("words", r"^distill.student: the student tokenizer cannot encode harvested text"),
    ("vit", r"^distill.student: cannot load model from .*ViTConfig"),
    ("missing", r"^distill.student: path does not exist"),
    ("not-gguf", r"^distill.student: .* is not a GGUF file"),
    ("hub-offline", r"^distill.student: hub id 'nobody/nothing' is not in the local cache"),
])
def test_a_student_that_cannot_be_trained_here_is_refused(project_copy, tmp_path, case, match,
                                                          monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if case == "words":
        student = {"path": str(build_base(tmp_path / "words", words_only=True))}
    elif case == "vit":
        student = _not_a_causal_lm(tmp_path)
    elif case == "missing":
        student = {"path": str(tmp_path / "nowhere")}
    elif case == "not-gguf":
        (tmp_path / "base.gguf").write_bytes(b"not a gguf file")
        student = {"gguf": str(tmp_path / "base.gguf")}
    else:
        student = {"hub": "nobody/nothing"}
    set_student(project_copy, student)
    with pytest.raises(PerseaError, match=match) as err:
        run_distill(load_project(project_copy))
    assert "\n" not in err.value.message
    assert not (project_copy / "runs").exists()


def test_cli_refuses_an_untrainable_student_in_one_line(project_copy, tmp_path, capsys,
                                                        monkeypatch):
    set_student(project_copy, {"path": str(build_base(tmp_path / "w", words_only=True))})
    code, out, err = run_cli(capsys, monkeypatch, "distill", "-p", str(project_copy))
    assert code == 2 and "Traceback" not in err
    assert " ".join(err.split()).startswith("error: distill.student: the student tokenizer "
                                            "cannot encode harvested text")
    assert not (project_copy / "runs").exists()


BASE = {"name": "p", "teachers": [{"name": "a", "builtin": "qwen3-toy"}]}


@pytest.mark.parametrize("student, found", [
    ({"path": "./base", "hidden_size": 64}, "found path, hidden_size"),
    ({"path": "./base", "hub": "org/name"}, "found path, hub"),
    ({"gguf": "b.gguf", "vocab_size": 300}, "found gguf, vocab_size"),
])
def test_shape_or_exactly_one_source(student, found):
    with pytest.raises(PerseaError) as err:
        parse_project({**BASE, "distill": {"student": student}})
    msg = err.value.message
    assert msg.startswith("persea.yaml: distill.student: give either the shape fields")
    assert msg.endswith(found) and "\n" not in msg


def test_revision_goes_with_hub_and_the_record_names_only_what_defines_the_student():
    with pytest.raises(PerseaError, match=r"distill.student: `revision:` goes with `hub:`"):
        parse_project({**BASE, "distill": {"student": {"path": "b", "revision": "main"}}})
    hub = parse_project({**BASE, "distill": {"student": {"hub": "org/x", "revision": "v1"}}})
    assert hub.distill.student.record() == {"hub": "org/x", "revision": "v1"}
    shape = parse_project({**BASE, "distill": {"student": {"hidden_size": 64}}})
    assert shape.distill.student.source is None
    assert shape.distill.student.record() == {
        "tokenizer": "bpe", "min_word_count": 4, "chat_format": "llama", "vocab_size": 512,
        "hidden_size": 64, "layers": 4, "heads": 4, "intermediate_size": 384}
