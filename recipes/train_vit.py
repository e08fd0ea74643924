#!/usr/bin/env python
"""Train a plain timm ViT with labels (the ancestry for small-scale runs, or a from-scratch baseline).

Launcher of :mod:`timm_learngene.recipes.train_vit`, which documents it (so do ``--help`` and
docs/options.md); runs from a checkout without installing the package.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timm_learngene.recipes.train_vit import main  # noqa: E402
from timm_learngene.training.cli import run_cli  # noqa: E402

if __name__ == '__main__':
    run_cli(main)
