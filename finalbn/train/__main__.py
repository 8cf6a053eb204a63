"""``python -m finalbn.train``: the ``finalbn train`` command.

The only module of finalbn.train that imports the command line, which itself
imports finalbn.results and so this package.
"""

from finalbn.cli import train_main

if __name__ == "__main__":
    raise SystemExit(train_main())
