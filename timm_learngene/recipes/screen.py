"""Screen candidate pools against the replication's pool and direct students on the same ancestry (issue 28).

    python -m timm_learngene.recipes.screen out/replication --candidate mid3=out/cand_mid3 --candidate ws=out/cand_ws

Prints a Markdown table (timm_learngene.recipes.replication.screen): per pool the test top-1 of the descendant
chosen on the validation split within each direct student's GMACs, the stitched descendants' mean, the training
compute after the shared ancestry, and issue 28's goal at one seed. Candidates are ``make demo``-layout run folders
(distill/, finetune/, eval/) that reuse the replication's ancestry, or nested pools (``train_nested``'s output
folder, e.g. the replication's ``seedN/nested``).
"""
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import ConfigError
from ..training.cli import run_cli
from ..training.options import Option, OptionTable
from .replication import screen

__all__ = ['OPTIONS', 'parse_args', 'run', 'main']

OPTIONS = OptionTable([
    Option('replication', str, None, "a replication run's output folder (its ancestry, seed folders, direct "
           'students)', positional=True),
    Option('candidate', List[str], [], 'a candidate pool, NAME=RUN_FOLDER (repeat for each)', repeat=True,
           metavar='NAME=RUN_FOLDER'),
    Option('seed', int, 0, 'the replication seed to compare with'),
], __doc__, config_file=False)


def parse_args(argv: Optional[Sequence[str]] = None):
    return OPTIONS.parse(argv)


def run(cfg) -> str:
    pairs = {}
    for item in cfg.candidate:
        name, sep, folder = item.partition('=')
        if not sep or not name or not folder:
            raise ConfigError(f'screen: a candidate is NAME=RUN_FOLDER, got {item!r}')
        pairs[name] = Path(folder)
    text = screen(Path(cfg.replication), pairs, cfg.seed)
    print(text)
    return text


def main(argv: Optional[Sequence[str]] = None):
    """``run(parse_args(argv))``."""
    return run(parse_args(argv))


if __name__ == '__main__':
    run_cli(main)
