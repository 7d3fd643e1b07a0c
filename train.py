"""Learn PandA parts and appearances: ``python train.py [gen=...] [rank.parts=...] [-m ...]``, the ``panda-train``
command of an installed panda (:mod:`panda.cli.train`, which takes the command's start first)."""

from panda.cli.train import main

if __name__ == "__main__":
    main()
