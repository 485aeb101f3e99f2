"""Third-party PRM layouts: `load_verifier(path, format=...)` against each model card's own recipe.

Each test builds a tiny random model with a real BPE tokenizer in the format's style (SentencePiece-like
for Math-Shepherd's Mistral, byte-level with ChatML for Qwen and Skywork, byte-level with Llama 3's chat for
RLHFlow),
saves it without ``ponder.json`` and compares `load_verifier`'s batched scores with the scores computed
here by hand the way the format's reference code does.
"""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForTokenClassification,
)

from ponder.inference.prm_formats import PRM_FORMATS, QWEN_MATH_SYSTEM_PROMPT
from ponder.inference.verifiers import load_verifier

QUESTIONS = ["Janet has 3 apples and buys 5 more. How many apples?", "What is 12 minus 4?"]
STEPS = [
    ["Step 1: She has 3 + 5 = 8 apples.", "Step 2: The answer is: 8"],
    ["Step 1: 12 - 4 = 7.", "Step 2: So 7 is left.", "Step 3: The answer is: 7"],
]
CORPUS = [q + " " + " ки\n".join(s) + " ки + -" for q, s in zip(QUESTIONS, STEPS)] * 20

CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def train_bpe(pre_tokenizer, special_tokens: list[str], alphabet: list[str]) -> Tokenizer:
    core = Tokenizer(models.BPE(unk_token="<unk>" if "<unk>" in special_tokens else None))
    core.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special_tokens, initial_alphabet=alphabet)
    core.train_from_iterator(CORPUS, trainer)
    return core


def mistral_like_tokenizer() -> PreTrainedTokenizerFast:
    """SentencePiece-style BPE (``▁`` for spaces, BOS added to every text, no pad token), as Mistral's."""
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", behavior="isolated"), metaspace])
    core = train_bpe(pre_tokenizer, ["<unk>", "<s>", "</s>"], ["\n"])
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def byte_level_tokenizer(special_tokens: list[str], chat_template: str, **roles) -> PreTrainedTokenizerFast:
    core = train_bpe(
        pre_tokenizers.ByteLevel(add_prefix_space=False), special_tokens, pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **roles)
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny(config_class, tokenizer, **kwargs):
    return config_class(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        **kwargs,
    )


def save(model, tokenizer, path):
    """Save the checkpoint and return the tokenizer as users get it (transformers may rebuild it by model type)."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def forward(model, input_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([input_ids])).logits[0]


def test_math_shepherd_scores_are_p_plus_at_each_tag(tmp_path):
    tokenizer = mistral_like_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny(LlamaConfig, tokenizer)).eval()
    tokenizer = save(model, tokenizer, tmp_path)
    scored = load_verifier(tmp_path, format="math-shepherd").score(QUESTIONS, STEPS)

    # Math-Shepherd's model card: tags after each step, P(+) over the '+'/'-' logits at every tag.
    tag_id = tokenizer.encode("ки")[-1]
    plus, minus = tokenizer.encode("+ -")[1:]
    for question, steps, result in zip(QUESTIONS, STEPS, scored):
        input_ids = tokenizer.encode(f"{question} " + "\n".join(step + " ки" for step in steps))
        logits = forward(model, input_ids)[:, [plus, minus]]
        expected = torch.softmax(logits, -1)[:, 0][torch.tensor(input_ids) == tag_id]
        assert len(expected) == len(steps)
        torch.testing.assert_close(torch.tensor(result.step_scores), expected, atol=1e-6, rtol=0)


def assert_qwen_math_prm_scores(model, tokenizer, scored) -> None:
    """Qwen2.5-Math-PRM's model card: steps joined by <extra_0>, class-1 probability at each of them."""
    separator = tokenizer.convert_tokens_to_ids("<extra_0>")
    for question, steps, result in zip(QUESTIONS, STEPS, scored):
        messages = [
            {"role": "system", "content": QWEN_MATH_SYSTEM_PROMPT},
            {"role": "user", "content": question},
            {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
        ]
        input_ids = tokenizer.encode(tokenizer.apply_chat_template(messages, tokenize=False))
        expected = torch.softmax(forward(model, input_ids), -1)[:, 1][torch.tensor(input_ids) == separator]
        assert len(expected) == len(steps)
        torch.testing.assert_close(torch.tensor(result.step_scores), expected, atol=1e-6, rtol=0)


def test_qwen_math_prm_scores_are_class_one_at_each_extra_0(tmp_path):
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
    tokenizer = byte_level_tokenizer(special, CHATML_TEMPLATE, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    torch.manual_seed(1)
    config = tiny(Qwen2Config, tokenizer, num_labels=2, pad_token_id=tokenizer.pad_token_id)
    model = Qwen2ForTokenClassification(config).eval()
    tokenizer = save(model, tokenizer, tmp_path)
    scored = load_verifier(tmp_path, format="qwen2.5-math-prm").score(QUESTIONS, STEPS)

    assert_qwen_math_prm_scores(model, tokenizer, scored)

    # The same layout written into ponder.json loads the same way.
    (tmp_path / "ponder.json").write_text(json.dumps(PRM_FORMATS["qwen2.5-math-prm"]))
    again = load_verifier(tmp_path).score(QUESTIONS, STEPS)
    assert [r.step_scores for r in again] == [r.step_scores for r in scored]


def test_qwen_math_prm_loads_as_released_with_its_two_layer_head(tmp_path):
    """Qwen2ForProcessRewardModel's head is Linear -> ReLU -> Linear under score.0 / score.2 (no remote code)."""
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
    tokenizer = byte_level_tokenizer(special, CHATML_TEMPLATE, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    torch.manual_seed(2)
    config = tiny(Qwen2Config, tokenizer, num_labels=2, pad_token_id=tokenizer.pad_token_id)
    config.architectures = ["Qwen2ForProcessRewardModel"]
    model = Qwen2ForTokenClassification(config).eval()
    model.score = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    tokenizer = save(model, tokenizer, tmp_path)
    scored = load_verifier(tmp_path, format="qwen2.5-math-prm").score(QUESTIONS, STEPS)

    assert_qwen_math_prm_scores(model, tokenizer, scored)


def test_skywork_prm_loads_as_released_and_scores_the_value_head_at_each_newline(tmp_path):
    """Skywork-o1-Open-PRM: ``Qwen2ForPrmModel`` with its value head under ``v_head.summary``, no remote code."""
    from safetensors.torch import save_file

    tokenizer = byte_level_tokenizer(["<|endoftext|>"], CHATML_TEMPLATE, bos_token="<|endoftext|>")
    torch.manual_seed(3)
    config = tiny(Qwen2Config, tokenizer, num_labels=1)
    model = Qwen2ForTokenClassification(config).eval()
    tokenizer = save(model, tokenizer, tmp_path)
    released = {name.replace("score.", "v_head.summary."): weight for name, weight in model.state_dict().items()}
    (tmp_path / "model.safetensors").unlink()
    save_file(released, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config.architectures, config.num_labels = ["Qwen2ForPrmModel"], 2  # as released: no num_labels of its own
    config.save_pretrained(tmp_path)
    scored = load_verifier(tmp_path, format="skywork-prm").score(QUESTIONS, STEPS)

    # Skywork's reference inference: BOS + question + "\n", each step tokenized alone and followed by
    # the "\n" token, the sigmoid of the value head at every such token.
    newline = tokenizer.encode("\n")[-1]
    for question, steps, result in zip(QUESTIONS, STEPS, scored):
        input_ids = tokenizer.encode(tokenizer.bos_token + question + "\n")
        flags = [False] * len(input_ids)
        for step in steps:
            step_ids = tokenizer.encode(step) + [newline]
            input_ids += step_ids
            flags += [False] * (len(step_ids) - 1) + [True]
        expected = torch.sigmoid(forward(model, input_ids)[:, 0])[torch.tensor(flags)]
        assert len(expected) == len(steps)
        torch.testing.assert_close(torch.tensor(result.step_scores), expected, atol=1e-6, rtol=0)


def test_causal_lm_label_tokens_are_the_tokens_their_text_encodes_to():
    """Under SentencePiece, "+" as text is the piece "▁+", not the vocabulary entry "+"; training and scoring agree."""
    from ponder.inference.verifiers import label_token_id

    tokenizer = mistral_like_tokenizer()
    plus = label_token_id(tokenizer, "+")
    assert tokenizer.convert_ids_to_tokens(plus) == "▁+"
    assert plus != tokenizer.convert_tokens_to_ids("+")


def test_rlhflow_scores_are_p_plus_before_each_assistant_reply(tmp_path):
    special = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tokenizer = byte_level_tokenizer(special, LLAMA3_TEMPLATE, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    torch.manual_seed(2)
    model = LlamaForCausalLM(tiny(LlamaConfig, tokenizer)).eval()
    tokenizer = save(model, tokenizer, tmp_path)
    scored = load_verifier(tmp_path, format="rlhflow").score(QUESTIONS, STEPS)

    # RLHFlow's recipe: one conversation per step prefix, P(+) at the third token from the end.
    plus, minus = tokenizer.encode("+")[-1], tokenizer.encode("-")[-1]
    for question, steps, result in zip(QUESTIONS, STEPS, scored):
        expected, conversation = [], []
        for index, step in enumerate(steps):
            conversation.append({"role": "user", "content": f"{question} {step}" if index == 0 else step})
            conversation.append({"role": "assistant", "content": "+"})
            input_ids = tokenizer.encode(tokenizer.apply_chat_template(conversation, tokenize=False))
            expected.append(torch.softmax(forward(model, input_ids)[-3, [plus, minus]], -1)[0])
        torch.testing.assert_close(torch.tensor(result.step_scores), torch.stack(expected), atol=1e-6, rtol=0)


def test_a_checkpoint_without_the_formats_head_or_layout_is_refused(tmp_path):
    tokenizer = mistral_like_tokenizer()
    save(LlamaForCausalLM(tiny(LlamaConfig, tokenizer)), tokenizer, tmp_path)
    with pytest.raises(ValueError, match="no weights for .*score"):
        load_verifier(tmp_path, format="qwen2.5-math-prm")  # a causal LM has no two-class head
    with pytest.raises(ValueError, match="unknown PRM format 'shepherd'"):
        load_verifier(tmp_path, format="shepherd")
    with pytest.raises(ValueError, match="no 'kind'; pass format="):
        load_verifier(tmp_path)
