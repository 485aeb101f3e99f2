"""The policy stage end to end: a real (small) training run, checkpoint, and sampled evaluation."""

import json
import random

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from ponder.training.policy import main

TINY = [
    "--config", "recipes/toy/policy.yaml",
    "--levels", "1", "2", "--train_operands", "2", "4", "--train_digits", "1", "2",
    "--hidden_size", "32", "--num_layers", "2", "--num_heads", "2", "--intermediate_size", "64",
    "--max_steps", "40", "--lr_scheduler_kwargs", '{"num_decay_steps": 10}', "--logging_steps", "10",
    "--warmup_steps", "5", "--learning_rate", "3e-3", "--max_train_minutes", "0",
    "--eval_problems_per_level", "4", "--eval_samples", "4", "--eval_max_new_tokens", "48",
    "--disable_tqdm", "true",
]  # fmt: skip


def test_policy_trains_saves_and_evaluates(tmp_path):
    record = main(TINY + ["--output_dir", str(tmp_path)])
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved == record
    assert saved["levels"] == [1, 2]
    assert set(saved["pass_at_1"]) == {"1", "2"} and set(saved["pass_at_4"]) == {"1", "2"}
    assert all(0 <= v <= 1 for v in saved["pass_at_1"].values())
    assert saved["sampling"]["temperature"] == 0.8 and saved["sampling"]["split"] == "test"
    assert saved["training"]["steps"] == 40 and saved["generated_tokens"] > 0
    curve = saved["training"]["loss_curve"]
    assert [step for step, _ in curve] == [10, 20, 30, 40]
    assert curve[-1][1] < curve[0][1] - 0.5  # it learns: ~4.6 is uniform over the vocabulary
    assert sum(saved["finish_reasons"].values()) == 2 * 4 * 4

    metadata = json.loads((tmp_path / "ponder.json").read_text())
    assert metadata == {"kind": "policy", "task": "arith", "step_delimiter": "\n", "prompt": "chat_template"}
    assert "learning_rate" in (tmp_path / "recipe.yaml").read_text()
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert model.config.hidden_size == 32
    assert tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+2+3"}], tokenize=False, add_generation_prompt=True
    )
    judged = main(TINY + ["--eval_only", "true", "--init_from", str(tmp_path), "--output_dir", str(tmp_path / "j")])
    assert judged["pass_at_1"] == saved["pass_at_1"] and "training" not in judged  # the saved policy, judged again
    assert json.loads((tmp_path / "j" / "eval.json").read_text()) == judged


def test_bad_training_ranges_are_named(tmp_path):
    with pytest.raises(ValueError, match="train_operands: give an inclusive range"):
        main(TINY + ["--train_operands", "5", "3", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="would exceed 4 digits"):
        main(TINY + ["--train_operands", "2", "20", "--train_digits", "1", "3", "--output_dir", str(tmp_path)])


def test_earlier_turns_train_every_answer_after_the_chat_before_it():
    """A multi-turn training chat: each answer is tokenized after the prompt inference would feed, and
    only answers and their EOS carry loss; chats too long for the positions lose their oldest turns."""
    from ponder.inference.tasks.arith import ArithTask
    from ponder.training.policy import SolutionStream
    from ponder.training.toy.model import build_tokenizer

    tokenizer = build_tokenizer(model_max_length=1024)
    stream = SolutionStream(tokenizer, [2, 4], [1, 2], seed=0, batch_size=4, group=1, earlier_turns=(2, 2))
    example = stream.example(random.Random(0))
    text = tokenizer.decode(example["input_ids"])
    lines = text.removeprefix(tokenizer.bos_token).split("\n")
    questions = [line[len("<|user|>") :] for line in lines if line.startswith("<|user|>")]
    assert len(questions) == 3
    trained = tokenizer.decode([t for t, label in zip(example["input_ids"], example["labels"]) if label != -100])
    eos = tokenizer.eos_token
    assert trained == "".join(ArithTask().reference_solution({"problem": q}) + eos for q in questions)
    last_prompt = tokenizer.apply_chat_template(_chat(questions), tokenize=False, add_generation_prompt=True)
    assert text.startswith(last_prompt)  # the last answer follows exactly the prompt inference feeds

    short = build_tokenizer(model_max_length=len(example["input_ids"]) - 1)
    clipped = SolutionStream(short, [2, 4], [1, 2], seed=0, batch_size=4, group=1, earlier_turns=(2, 2))
    assert tokenizer.decode(clipped.example(random.Random(0))["input_ids"]).count("<|user|>") < 3
    single = SolutionStream(tokenizer, [2, 4], [1, 2], seed=0, batch_size=4, group=1)
    assert tokenizer.decode(single.example(random.Random(0))["input_ids"]).count("<|user|>") == 1


def _chat(questions: list[str]) -> list[dict]:
    """The chat before the last answer: every earlier question with its reference answer, then the last question."""
    from ponder.inference.tasks.arith import ArithTask

    messages = []
    for question in questions[:-1]:
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": ArithTask().reference_solution({"problem": question})},
        ]
    return messages + [{"role": "user", "content": questions[-1]}]
