"""Run a causal model over many sequences that share prefixes, encoding each shared prefix once.

Searches score sequences that mostly repeat each other: the M children of a beam share all of its
steps, the N samples of best-of-N share their prompt. Here each shared prefix is run once with a KV
cache, and each sequence then runs only its own tokens on a copy of that cache (the attention of
a causal model at a position depends on the tokens up to it, so the result equals a full forward up
to float error). Sequences are grouped at caller-given boundaries (step starts): each sequence takes
the longest boundary prefix that another sequence also has, and a sequence sharing with none runs
whole.

`forward(input_ids, attention_mask, position_ids, cache)` runs the model and returns per-position
outputs (hidden states or logits); `features(outputs, ids, first)` reduces a run's outputs (positions
`first`, `first + 1`, ... of `ids`) to what the caller keeps per position.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache


@dataclass
class PrefixGroup:
    """Sequences (indices) whose first `shared` tokens are the same and are run once for all of them."""

    shared: int
    members: list[int]


def prefix_groups(sequences: list[list[int]], boundaries: list[list[int]]) -> list[PrefixGroup]:
    """Group each sequence under its longest boundary prefix that another sequence also has.

    The token at the boundary itself is run again by each member (`shared` = boundary - 1), so
    that a next-token feature at the last shared position sees its own sequence's next token.
    """
    keys = [[tuple(ids[:b]) for b in bounds if 1 < b < len(ids)] for ids, bounds in zip(sequences, boundaries)]
    counts = Counter(key for own in keys for key in set(own))
    groups: dict[tuple, PrefixGroup] = {}
    for index, (ids, own) in enumerate(zip(sequences, keys)):
        common = [key for key in own if counts[key] > 1]
        key = max(common, key=len) if common else (index,)  # a sequence sharing with none is its own key
        shared = len(key) - 1 if common else len(ids) - 1
        groups.setdefault(key, PrefixGroup(shared, [])).members.append(index)
    return list(groups.values())


def charged_tokens(sequences: list[list[int]], groups: list[PrefixGroup]) -> list[int]:
    """Tokens each sequence is charged: its own tokens plus an even share of its group's prefix.

    The charges sum to the tokens the model actually runs.
    """
    charges = [0] * len(sequences)
    for group in groups:
        share, extra = divmod(group.shared, len(group.members))
        for rank, index in enumerate(group.members):
            charges[index] = len(sequences[index]) - group.shared + share + (rank < extra)
    return charges


@torch.no_grad()
def shared_prefix_features(
    model,
    sequences: list[list[int]],
    groups: list[PrefixGroup],
    forward,
    features,
    pad_id: int,
    max_batch_tokens: int,
) -> list[torch.Tensor]:
    """Per sequence, `features` over all of its positions, from one run per prefix and one per suffix."""
    results: list[torch.Tensor | None] = [None] * len(sequences)
    for chunk in _chunks(sequences, groups, max_batch_tokens):
        _run_chunk(model, sequences, chunk, forward, features, pad_id, results)
    return results


def _chunks(sequences, groups: list[PrefixGroup], max_batch_tokens: int) -> list[list[PrefixGroup]]:
    """Groups in order of prefix length, cut so that a chunk's padded suffix batch stays under the cap."""
    chunks, current, members, longest_prefix, longest_suffix = [], [], 0, 0, 0
    for group in sorted(groups, key=lambda g: g.shared):
        suffix = max(len(sequences[i]) for i in group.members) - group.shared
        prefix_if, suffix_if = max(longest_prefix, group.shared), max(longest_suffix, suffix)
        if current and (members + len(group.members)) * (prefix_if + suffix_if) > max_batch_tokens:
            chunks.append(current)
            current, members, prefix_if, suffix_if = [], 0, group.shared, suffix
        current.append(group)
        members += len(group.members)
        longest_prefix, longest_suffix = prefix_if, suffix_if
    if current:
        chunks.append(current)
    return chunks


def _run_chunk(model, sequences, chunk: list[PrefixGroup], forward, features, pad_id: int, results: list) -> None:
    """Run the chunk's prefixes (left-padded) into one cache, then every member's own tokens on it."""
    device = next(model.parameters()).device
    width = max(g.shared for g in chunk)
    prefix_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    prefix_mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for row, group in enumerate(chunk):
        ids = sequences[group.members[0]][: group.shared]
        if ids:
            prefix_ids[row, width - len(ids) :] = torch.tensor(ids)
            prefix_mask[row, width - len(ids) :] = 1
    cache = DynamicCache(config=model.config)
    prefix_features = [None] * len(chunk)
    if width:
        outputs = forward(prefix_ids, prefix_mask, (prefix_mask.cumsum(-1) - 1).clamp(min=0), cache)
        for row, group in enumerate(chunk):
            ids = sequences[group.members[0]]
            prefix_features[row] = features(outputs[row, width - group.shared :], ids, 0)
    members = [(row, index) for row, group in enumerate(chunk) for index in group.members]
    suffix_width = max(len(sequences[i]) - chunk[row].shared for row, i in members)
    suffix_ids = torch.full((len(members), suffix_width), pad_id, dtype=torch.long)
    suffix_mask = torch.zeros((len(members), suffix_width), dtype=torch.long)
    positions = torch.zeros((len(members), suffix_width), dtype=torch.long)
    for line, (row, index) in enumerate(members):
        shared, own = chunk[row].shared, sequences[index][chunk[row].shared :]
        suffix_ids[line, : len(own)] = torch.tensor(own)
        suffix_mask[line, : len(own)] = 1
        positions[line] = torch.arange(shared, shared + suffix_width)
    group_of_member = torch.tensor([row for row, _ in members])
    if width:
        cache.batch_select_indices(group_of_member.to(device))
    outputs = forward(suffix_ids, torch.cat([prefix_mask[group_of_member], suffix_mask], dim=-1), positions, cache)
    for line, (row, index) in enumerate(members):
        shared, ids = chunk[row].shared, sequences[index]
        own = features(outputs[line, : len(ids) - shared], ids, shared)
        results[index] = own if prefix_features[row] is None else torch.cat([prefix_features[row], own])
