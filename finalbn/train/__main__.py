"""``python -m finalbn.train``: the ``finalbn train`` command.

The only module of finalbn.train that imports the command line. Python
imports the package first; its names load lazily, so ``--help`` answers
before torch is imported (the command imports it only to train).
"""

from finalbn.train.cli import train_main

if __name__ == "__main__":
    raise SystemExit(train_main())
