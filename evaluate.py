"""Use learnt factors: ``python evaluate.py task=edit|remove|localize|refine|roir|name|studio run=RUN_DIR [...]``,
the ``panda-evaluate`` command of an installed panda (:mod:`panda.cli.evaluate`)."""

from panda.cli.evaluate import main

if __name__ == "__main__":
    main()
