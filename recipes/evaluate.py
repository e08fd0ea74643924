#!/usr/bin/env python
"""Evaluate every descendant of a pool: top-1/top-5, params, GMACs, measured throughput and latency.

Launcher of :mod:`timm_learngene.recipes.evaluate`, which documents it (so do ``--help`` and
docs/options.md); runs from a checkout without installing the package.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timm_learngene.recipes.evaluate import main  # noqa: E402
from timm_learngene.training.cli import run_cli  # noqa: E402

if __name__ == '__main__':
    run_cli(main)
