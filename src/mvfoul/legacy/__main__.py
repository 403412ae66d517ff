"""``python -m mvfoul.legacy --markdown``: print MIGRATION.md; any other words: the same as
``python training/train.py`` (translate an old command line and run it)."""

import sys

from mvfoul.legacy.cli import run
from mvfoul.legacy.markdown import migration_markdown

if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(migration_markdown())
    else:
        run()
