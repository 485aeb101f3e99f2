"""The verifier trainer: a `transformers.Trainer` that learns a score at chosen token positions.

Features come from `ponder.training.verifiers.data` (``input_ids``, scored ``positions``, float
``labels``). Heads:

- ``token_classification``: logits of `AutoModelForTokenClassification` at the positions; one logit
  trains with BCE on the (soft) label, two with cross-entropy against [1 − y, y];
- ``causal_lm``: the LM's logits for the negative and positive tokens at the positions (the step
  tag), cross-entropy against [1 − y, y], so that an existing chat LM becomes a PRM;
- ``orm``: `AutoModelForSequenceClassification`'s pooled logits, one label per solution;
- ``likelihood``: a causal LM's own probability of the solution's tokens, read like the
  ``policy_likelihood`` verifier (the lowest token probability up to each step's end), trained with
  BCE of that probability against the step label; features label every token of a step.

The loss is summed over labelled positions and divided by their count over the whole global batch
(`num_items_in_batch`), so one process with batch 2B and two processes with batch B train alike
(``likelihood`` averages over each process's labelled steps instead).
Evaluation reports step AUC and accuracy against the hard labels and ProcessBench's first-error F1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import Trainer

from ponder.inference.metrics import auc, first_below, first_error_f1
from ponder.inference.verifiers import positive_probability

HEADS = {
    "token_classification": "prm_token_classification",
    "causal_lm": "prm_causal_lm",
    "orm": "orm",
    "likelihood": "policy_likelihood",
}


class StepCollator:
    """Right-pads ``input_ids`` (pad id), ``positions`` (0), ``labels`` (-100) and ``steps`` (-1) over a batch."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        steps = max(len(f["positions"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(features), width), dtype=torch.long)
        positions = torch.zeros((len(features), steps), dtype=torch.long)
        labels = torch.full((len(features), steps), -100.0)
        step_of = torch.full((len(features), steps), -1, dtype=torch.long)
        for row, f in enumerate(features):
            input_ids[row, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            attention[row, : len(f["input_ids"])] = 1
            positions[row, : len(f["positions"])] = torch.tensor(f["positions"])
            labels[row, : len(f["labels"])] = torch.tensor(f["labels"], dtype=torch.float)
            step_of[row, : len(f["steps"])] = torch.tensor(f["steps"])
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "positions": positions,
            "labels": labels,
            "steps": step_of,
        }


def lowest_per_step(scores: torch.Tensor, labels: torch.Tensor, steps: torch.Tensor) -> tuple:
    """[batch, positions] scores and labels → [batch, steps]: the lowest score up to each step's end (as
    the verifier reads ``step_min``; the identity for one position per step) and each step's label."""
    count = int(steps.max().item()) + 1 if steps.numel() else 1
    valid, index = steps >= 0, steps.clamp(min=0)
    lowest = torch.full((scores.shape[0], count), float("inf"), device=scores.device)
    lowest = lowest.scatter_reduce(1, index, scores.masked_fill(~valid, float("inf")), "amin")
    step_labels = torch.full((scores.shape[0], count), -100.0, device=scores.device)
    step_labels = step_labels.scatter_reduce(1, index, labels.masked_fill(~valid, -100.0), "amax")
    lowest = lowest.cummin(dim=1).values
    return lowest.masked_fill(step_labels == -100, -100.0), step_labels


def step_log_likelihoods(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """[batch, steps] log of the lowest token probability up to each step's end, and each step's label.

    The ``likelihood`` head's score, read exactly as the ``policy_likelihood`` verifier reads it.
    """
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.float()
    positions = inputs["positions"]
    rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
    predicted = logits[rows, (positions - 1).clamp(min=0)].log_softmax(-1)  # each token is predicted one earlier
    token_logprobs = predicted.gather(-1, inputs["input_ids"][rows, positions][..., None])[..., 0]
    return lowest_per_step(token_logprobs, inputs["labels"], inputs["steps"])


def step_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position loss of [..., 1] (BCE) or [..., 2] ([negative, positive] cross-entropy) logits."""
    if logits.shape[-1] == 1:
        return nn.functional.binary_cross_entropy_with_logits(logits[..., 0], targets, reduction="none")
    logprobs = torch.log_softmax(logits, -1)
    return -(targets * logprobs[..., 1] + (1 - targets) * logprobs[..., 0])


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


class VerifierTrainer(Trainer):
    """`Trainer` with the step-position loss above; `label_token_ids` = [negative, positive] for ``causal_lm``."""

    def __init__(self, *args, head: str, label_token_ids: list[int] | None = None, **kwargs):
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; use one of {sorted(HEADS)}")
        super().__init__(*args, **kwargs)
        self.head = head
        self.label_token_ids = label_token_ids
        self.model_accepts_loss_kwargs = True  # compute_loss divides by num_items_in_batch itself
        self._loss_shifts_labels = False  # labels are per scored position, not per next token

    def step_logits(self, model, inputs: dict) -> torch.Tensor:
        """[batch, positions, classes] logits at the labelled positions."""
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        if self.head == "orm":
            return logits[:, None, :]
        rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
        at_positions = logits[rows, inputs["positions"]]
        if self.head == "causal_lm":
            at_positions = at_positions[..., self.label_token_ids]
        return at_positions

    def likelihood_loss(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean BCE of each step's lowest token probability against its label; the probabilities; the labels."""
        logprobs, labels = step_log_likelihoods(model, inputs)
        mask = labels.ne(-100)
        logprobs, targets = logprobs.masked_fill(~mask, 0.0), labels.clamp(min=0)
        log_wrong = torch.log1p(-logprobs.exp().clamp(max=1 - 1e-6))
        losses = -(targets * logprobs + (1 - targets) * log_wrong)
        loss = (losses * mask).sum() / mask.sum().clamp(min=1)
        return loss, logprobs.exp().masked_fill(~mask, -100.0), labels

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.head == "likelihood":
            loss, probabilities, _ = self.likelihood_loss(model, inputs)
            return (loss, probabilities) if return_outputs else loss
        logits = self.step_logits(model, inputs).float()
        labels = inputs["labels"]
        mask = labels.ne(-100)
        total = (step_losses(logits, labels.clamp(min=0)) * mask).sum()
        if num_items_in_batch is None:
            loss = total / mask.sum().clamp(min=1)
        else:
            # DDP/DeepSpeed average gradients over processes; the divisor already counts all of them.
            scale = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
            loss = total / num_items_in_batch * scale
        return (loss, logits) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            if self.head == "likelihood":
                loss, probabilities, labels = self.likelihood_loss(model, inputs)
                return loss.detach(), None if prediction_loss_only else probabilities, labels
            loss, logits = self.compute_loss(model, inputs, return_outputs=True)
        scores, labels = lowest_per_step(positive_probability(logits), inputs["labels"], inputs["steps"])
        return loss.detach(), None if prediction_loss_only else scores, labels


def step_metrics(eval_prediction) -> dict:
    """Step AUC and accuracy against hard labels (value > 0) and first-error F1, from padded arrays."""
    scores, labels = np.asarray(eval_prediction.predictions), np.asarray(eval_prediction.label_ids)
    mask = labels != -100
    flat_scores, flat_positive = scores[mask].tolist(), (labels[mask] > 0).tolist()
    predicted, truth = [], []
    for row_scores, row_labels, row_mask in zip(scores, labels, mask):
        predicted.append(first_below(row_scores[row_mask].tolist()))
        truth.append(next((i for i, v in enumerate(row_labels[row_mask]) if v <= 0), None))
    f1 = first_error_f1(predicted, truth)
    step_auc = auc(flat_scores, flat_positive)
    return {
        "step_auc": step_auc if step_auc is not None else float("nan"),
        "step_accuracy": float(np.mean([(s >= 0.5) == p for s, p in zip(flat_scores, flat_positive)])),
        "first_error_f1": f1["f1"] if f1["f1"] is not None else float("nan"),
    }
