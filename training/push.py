"""`ponder push`: upload a checkpoint folder (with a model card) or a saved dataset (with a dataset card) to the Hub.

    ponder push outputs/toy/prm --repo-id ORG/toy-prm [--private] [--revision BRANCH | --create-pr]
    ponder push outputs/toy/label --repo-id ORG/toy-labels     # a saved `datasets` folder pushes as a dataset

What is uploaded and what never is: `ponder.training.core.hub`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from huggingface_hub import CommitInfo

from ponder.training.core.hub import push_checkpoint, push_dataset, saved_dataset_dir
from ponder.training.reporting.cards import DEFAULT_LICENSE


def main(argv: list[str] | None = None) -> CommitInfo:
    parser = argparse.ArgumentParser(prog="ponder push", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a checkpoint folder, or a folder holding a saved `datasets` dataset")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub (created when missing)")
    parser.add_argument(
        "--repo-type", choices=("model", "dataset"), help="default: dataset when PATH holds a saved dataset, else model"
    )
    parser.add_argument("--private", action="store_true", help="create the repository private")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--revision", help="branch to push to, created from main when missing")
    target.add_argument("--create-pr", action="store_true", help="open a pull request instead of pushing to main")
    parser.add_argument("--commit-message", help="default: 'Upload ponder <kind> checkpoint' / 'Upload ponder dataset'")
    parser.add_argument(
        "--license", default=DEFAULT_LICENSE, help="card license; use the base model's when fine-tuning"
    )
    args = parser.parse_args(argv)
    repo_type = args.repo_type or ("dataset" if saved_dataset_dir(args.path) else "model")
    push = push_dataset if repo_type == "dataset" else push_checkpoint
    info = push(
        args.path,
        args.repo_id,
        license=args.license,
        commit_message=args.commit_message,
        private=args.private or None,
        revision=args.revision,
        create_pr=args.create_pr,
    )
    print(info.pr_url or info.commit_url, flush=True)
    return info


if __name__ == "__main__":
    main()
