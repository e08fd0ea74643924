#!/usr/bin/env python
"""Train a nested pool: one timm ViT whose width slices are models of their own.

Launcher of :mod:`timm_learngene.recipes.train_nested`, which documents it (so do ``--help`` and
docs/options.md); runs from a checkout without installing the package.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timm_learngene.recipes.train_nested import main  # noqa: E402
from timm_learngene.training.cli import run_cli  # noqa: E402

if __name__ == '__main__':
    run_cli(main)
