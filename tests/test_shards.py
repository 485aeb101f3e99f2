"""Sharded work: which process of which job computes each shard, and merging only a complete set of shards."""

from types import SimpleNamespace

import pytest

from ponder.training.core.shards import JobSplitConfig, Worker, merge_shards, run_shards


def test_jobs_times_processes_partition_the_shards():
    owners = {}
    for shard_index in range(3):
        for process_index in range(2):
            state = SimpleNamespace(process_index=process_index, num_processes=2)
            for shard in JobSplitConfig(shard_index=shard_index, num_shards=3).worker(state).shards(20):
                assert shard not in owners
                owners[shard] = (shard_index, process_index)
    assert sorted(owners) == list(range(20))
    assert owners[7] == (0, 1) and owners[10] == (2, 0)  # 7 mod 6 = 0·2 + 1, 10 mod 6 = 2·2 + 0
    with pytest.raises(ValueError, match="shard_index must lie in 0..num_shards - 1"):
        JobSplitConfig(shard_index=2, num_shards=2)


def test_merge_waits_for_every_shard_and_names_the_missing_ones(tmp_path):
    items = list(range(10))

    def compute(index, shard):
        return {"rows": [10 * x for x in shard], "stats": {"items": len(shard)}}

    assert run_shards(items, 3, tmp_path, compute, Worker(1, 2)) == 2  # shards 1 and 3 of 0..3
    with pytest.raises(FileNotFoundError, match=r"shard\(s\) 0, 2 of 4"):
        merge_shards(tmp_path, 4)
    assert run_shards(items, 3, tmp_path, compute) == 2  # a run without a split computes only the rest
    rows, stats = merge_shards(tmp_path, 4)
    assert rows == [10 * x for x in items] and [s["items"] for s in stats] == [3, 3, 3, 1]
