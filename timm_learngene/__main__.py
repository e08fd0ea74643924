"""Command line: ``python -m timm_learngene push FOLDER REPO`` uploads a pool folder to the Hugging Face Hub.

    python -m timm_learngene push out/finetune/pool my-org/learngene-pool-deit-base-l6
    python -m timm_learngene push out/finetune/pool my-org/pool --stage-only /tmp/preview   # review, upload nothing
"""
import argparse
import sys
from typing import List, Optional

from .hub import push_to_hub, stage_for_hub
from .hub_errors import hub_error
from .logs import setup_logging

__all__ = ['main', 'parse_args']


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m timm_learngene', description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    push = sub.add_parser('push', help='upload a pool folder (save_pool output) with a model card to a Hub repo')
    push.add_argument('folder', help='pool folder holding model.safetensors + config.json')
    push.add_argument('repo', help='Hub repo id, ORG/NAME (created if missing)')
    vis = push.add_mutually_exclusive_group()
    vis.add_argument('--private', dest='private', action='store_true', default=None,
                     help='create the repo private (only applies when it does not exist yet)')
    vis.add_argument('--public', dest='private', action='store_false', help='create the repo public')
    push.add_argument('--revision', default=None, help='branch to commit to (created if missing); default main')
    push.add_argument('--commit-message', default=None)
    push.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing')
    push.add_argument('--token', default=None, help='Hub token; default the logged-in one or HF_TOKEN')
    push.add_argument('--dataset', dest='datasets', action='append', default=None, metavar='HUB_ID',
                      help='dataset for the model card metadata (repeatable); default from the recorded recipe')
    push.add_argument('--license', default=None, help="model card license; default the pool's (apache-2.0)")
    push.add_argument('--stage-only', default=None, metavar='DIR',
                      help='write the files that would be uploaded to DIR (new or empty) and upload nothing')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command; 0 on success, 2 with one ``error:`` line on stderr for a documented failure (a bad folder,
    pool or repo id; the Hub offline, unreachable or refusing)."""
    args = parse_args(argv)
    setup_logging()
    try:
        if args.stage_only:
            out = stage_for_hub(args.folder, args.repo, args.stage_only, datasets=args.datasets, license=args.license)
            print(f'staged {", ".join(sorted(p.name for p in out.iterdir()))} in {out}; nothing uploaded')
            return 0
        info = push_to_hub(args.folder, args.repo, private=args.private, token=args.token, revision=args.revision,
                           commit_message=args.commit_message, create_pr=args.create_pr, datasets=args.datasets,
                           license=args.license)
    except (ValueError, FileExistsError, ImportError) as e:  # bad folder / pool / repo id: the user's to fix
        print(f'error: {e}', file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - offline, no network, the Hub refused: one line; anything else raises
        err = hub_error(e, f'pushing {args.folder} to {args.repo}',
                        f'write the files with --stage-only DIR now and upload DIR later')
        if err is None:
            raise
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'pushed {args.folder} to {args.repo}: {getattr(info, "commit_url", None) or info}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
