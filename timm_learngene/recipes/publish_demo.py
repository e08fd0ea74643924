"""Publish a finished ``make demo`` run into the docs: ``docs/demo.md`` (the run's report), ``docs/demo_pareto.png``,
and the Targets table of the report into README.md between the ``<!-- demo:start -->`` and ``<!-- demo:end -->``
markers, so the README's numbers always come from a report, never typed by hand. A replication run
(``make demo-docs PRESET=replication``; its report is rewritten after each arm, so a partial run publishes what
finished, with the seeds per arm stated) goes to ``docs/replication.md`` + ``docs/replication.png`` and its Claims
and budget table into README.md between ``<!-- replication:start -->`` and ``<!-- replication:end -->``.

    python -m timm_learngene.recipes.publish_demo [OUT_DIR]        # default out/demo (make demo-docs)

Paths are relative to the working directory: run it in the root of a checkout (docs/ and README.md are there).
"""
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError

__all__ = ['publish', 'main']

START, END = '<!-- demo:start -->', '<!-- demo:end -->'
REP_START, REP_END = '<!-- replication:start -->', '<!-- replication:end -->'


def _section(text: str, heading: str) -> str:
    """The lines of ``text`` from ``heading`` to the next heading of the same level (exclusive)."""
    lines = text.splitlines()
    if heading not in lines:
        raise ConfigError(f'the report has no {heading!r} section; run the demo preset to the end first')
    i = lines.index(heading) + 1
    j = next((k for k in range(i, len(lines)) if lines[k].startswith('## ')), len(lines))
    return '\n'.join(lines[i:j]).strip()


def _between(readme: Path, start: str, end: str, summary: str) -> None:
    body = readme.read_text()
    if start not in body or end not in body:
        raise ConfigError(f'{readme} has no {start} ... {end} markers')
    head, rest = body.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f'{head}{start}\n{summary}\n{end}{tail}')


def publish(out: Path, docs: Path = Path('docs'), readme: Path = Path('README.md')) -> None:
    replication = out / 'report' / 'replication.md'
    if replication.is_file():
        text = replication.read_text()
        docs.mkdir(parents=True, exist_ok=True)
        (docs / 'replication.md').write_text(text)
        shutil.copy(out / 'report' / 'replication.png', docs / 'replication.png')
        intro = text.split('\n## ', 1)[0].split('\n', 1)[1].strip()
        summary = '\n\n'.join([intro, _section(text, '## Claims'), _section(text, '## Best top-1 within a GMACs budget')])
        _between(readme, REP_START, REP_END, summary.replace('](replication.png)', '](docs/replication.png)'))
        return
    report = out / 'report' / 'report.md'
    if not report.is_file():
        raise ConfigError(f'{report} not found; run make demo first')
    text = report.read_text()
    docs.mkdir(parents=True, exist_ok=True)
    (docs / 'demo.md').write_text(text.replace('](pareto.png)', '](demo_pareto.png)'))
    shutil.copy(out / 'report' / 'pareto.png', docs / 'demo_pareto.png')
    _between(readme, START, END, _section(text, '## Targets'))


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    publish(Path(args[0]) if args else Path('out') / 'demo')


if __name__ == '__main__':
    main()
