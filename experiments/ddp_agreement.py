"""One process against two: do the exported factors agree, appearance by appearance?

Trains each setting twice with ``train.py``, as a user runs it: one process of batch 2B (``trainer=cpu``) and two
CPU processes of batch B (``trainer=ddp trainer.accelerator=cpu trainer.devices=2``: the same samples). The
appearances in ``factors.pt`` are in their canonical form (numbered by decreasing norm, each signed so that the
third moment of its coefficients on the validation samples is non-negative), so appearance ``j`` of one run
should be appearance ``j`` of the other, with the same sign. Recorded per setting: both held-out errors, the
smallest cosine between matching columns of ``A`` (negative: a sign differs), how many columns fall below a
cosine of 0.99, and the largest difference of ``P`` relative to its largest entry.

    python experiments/ddp_agreement.py      # writes experiments/results/ddp_agreement.md (about 6 min on 2 cores)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panda.base.factors_file import load_factors  # noqa: E402
from panda.base.files import atomic_write  # noqa: E402

TWO = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
# (label, overrides of both runs, the global batch)
SETTINGS = [
    ("the default (`python train.py`: R_S = 48, R_C = C = 128, 240 steps)", [], 64),
    ("`experiment=smoke` (the default ranks and solver, 12 steps)", ["experiment=smoke"], 16),
]
OUT = ROOT / "experiments" / "results" / "ddp_agreement.md"


def train(out: Path, overrides: list[str]) -> tuple[dict, float]:
    """Run ``train.py`` with ``overrides`` into ``out``; its factors and held-out error."""
    subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={out}"], cwd=ROOT, check=True)
    return load_factors(out / "factors.pt"), json.loads((out / "metrics.json").read_text())["val_rel_error"]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for index, (label, overrides, batch) in enumerate(SETTINGS):
            one, one_error = train(Path(work) / f"{index}-one", [*overrides, f"data.batch_size={batch}"])
            two, two_error = train(Path(work) / f"{index}-two", [*overrides, *TWO, f"data.batch_size={batch // 2}"])
            cosines = torch.nn.functional.cosine_similarity(one["A"], two["A"], dim=0)
            difference = ((one["P"] - two["P"]).abs().max() / one["P"].abs().max()).item()
            rows.append(
                f"| {label} | {one_error:.4f} | {two_error:.4f} | {cosines.min().item():.4f} "
                f"| {int((cosines < 0.99).sum())} of {cosines.numel()} | {difference:.2%} |"
            )
    lines = [
        "# One process against two: the exported factors",
        "",
        "`python experiments/ddp_agreement.py`: each setting trained by one process of batch 2B and by two CPU "
        "processes (gloo) of batch B, the same samples. Appearances compared column by column in their canonical "
        "form (`factors.pt`).",
        "",
        "| setting | held-out error, 1 process | 2 processes | smallest cosine of matching appearances "
        "| appearances below 0.99 | largest difference of P (of its largest entry) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    atomic_write(OUT, "\n".join(lines).encode())
    print(OUT.read_text())


if __name__ == "__main__":
    main()
