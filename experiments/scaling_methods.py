"""Each method's time and peak memory to find its edit directions, as the generator grows.

The methods as the ROIR benchmark runs them (``panda/roir``). PandA is its training, ``python train.py`` with its
defaults (the pictures and the part naming, which run after training, off), timed by ``fit_seconds`` of
``metrics.json``: what the benchmark counts as PandA's time to directions. GANSpace, SeFa, LowRankGAN, ReSeFa and
StyleSpace are fitted as :func:`panda.roir.editors.build_editors` fits them, with the options of
``conf/roir/default.yaml``, and timed by the ``seconds`` the benchmark reports: GANSpace and SeFa are fitted once;
the region-conditioned methods on the masks of three regions (the benchmark's eyes, nose and mouth; here fixed
boxes: their time does not depend on what the masks hold, and random weights draw no faces). LowRankGAN and ReSeFa
compute each calibration sample's Jacobian once for the three regions; StyleSpace fits each region on its own.

Every method gets the same number of samples N (``--samples``; by default PandA's training samples,
``trainer.max_steps x data.batch_size``): PandA trains on N samples (its held-out set comes on top, in its time),
GANSpace draws N (its ``samples``), the region-conditioned methods are fitted on N calibration latents, SeFa reads
weights only. A second table gives each method at the benchmark's own counts (GANSpace 5,000 samples, the
region-conditioned methods the 64 calibration samples).

Generators: the DCGAN faces, 64 px (PandA at its default layer ``main.8``), and StyleGAN2 with random weights at
256 and 1024 px (``conf/gen/stylegan2_ffhq.yaml``, ``gen.random_init=true``; PandA at ``synthesis.b16.conv1``,
512 x 16 x 16, with that config's ranks); the baselines on the same generator.

Each measurement runs in a child process of its own (``experiments/scaling_jobs.py``, or ``train.py``), one at a
time, with ``--threads`` torch threads (default 1: on cores other jobs share, two OpenMP threads slowed the
Jacobians' small operations down several times); its peak memory is the child's peak resident memory
(``ru_maxrss``), and the machine's load average is recorded before and after it. What fits in a few minutes on
2 CPU cores is measured; the rest is extrapolated from measured costs per sample, as the report's assumptions
say, and marked so. A ``## Reading`` section already in the report is kept.

    python experiments/scaling_methods.py          # writes experiments/results/scaling_methods.{md,png}
    python experiments/scaling_methods.py --tiny   # a quick check of the script: ReSeFa on the DCGAN, N = 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panda.base.config import compose  # noqa: E402
from panda.base.files import atomic_write  # noqa: E402

JOBS = Path(__file__).resolve().parent / "scaling_jobs.py"
READING = "\n## Reading\n"  # the hand-written part of the report, kept when the tables are rewritten
METHODS = ("panda", "ganspace", "sefa", "lowrankgan", "resefa", "stylespace")
JACOBIAN = ("lowrankgan", "resefa")  # the same Jacobians (region_statistics), each its own solves
REGIONS = 3  # the benchmark's eyes, nose and mouth


@dataclass(frozen=True)
class Generator:
    """A generator of the study: its label, the ``train.py`` overrides that choose it, and those of a small twin
    of the same architecture (random weights) that warms up torch's forward-mode products."""

    label: str
    overrides: tuple[str, ...]
    twin: tuple[str, ...]


STYLEGAN2 = ("gen=stylegan2_ffhq", "gen.random_init=true")
GENERATORS = {
    "dcgan64": Generator(
        "DCGAN faces 64 px", ("gen=dcgan_faces",), ("gen=dcgan_faces", "gen.random_init=true", "+gen.net.ngf=2")
    ),
    "stylegan2_256": Generator(
        "StyleGAN2 256 px (random weights)",
        (*STYLEGAN2, "gen.net.arch.img_resolution=256"),
        (*STYLEGAN2, "gen.net.arch.img_resolution=16"),
    ),
    "stylegan2_1024": Generator(
        "StyleGAN2 1024 px (random weights)", STYLEGAN2, (*STYLEGAN2, "gen.net.arch.img_resolution=16")
    ),
}


@dataclass
class Run:
    """One child process: what it ran, its result, its wall seconds, its peak memory (MiB), the load around it."""

    what: str
    result: dict[str, Any]
    seconds: float
    peak_mb: float
    load: tuple[float, float]


def measure(command: list[str], what: str, scratch: Path) -> Run:
    """Run ``command`` as a child process (it must succeed); its result is the last line of its stdout when that
    is JSON."""
    before = os.getloadavg()[0]
    out, err = scratch / "stdout", scratch / "stderr"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)  # the child's own resource usage, its peak memory among it
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        tail = "\n".join(err.read_text().splitlines()[-15:])
        raise SystemExit(f"{what} failed (exit {process.returncode}):\n{tail}")
    lines = out.read_text().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    run = Run(what, result, wall, usage.ru_maxrss / 1024, (before, os.getloadavg()[0]))
    print(f"{what}: {wall:.1f} s, peak {run.peak_mb:,.0f} MiB, load {before:.1f} -> {run.load[1]:.1f}", flush=True)
    return run


def job_run(generator: str, job: dict[str, Any], what: str, scratch: Path) -> Run:
    """A job of ``experiments/scaling_jobs.py`` on ``generator``, in a child process."""
    job = {"overrides": list(GENERATORS[generator].overrides), **job}
    return measure([sys.executable, str(JOBS), json.dumps(job)], f"{generator}: {what}", scratch)


def train_run(generator: str, steps: int, scratch: Path) -> Run:
    """``python train.py`` on ``generator`` with its defaults but ``steps``; its ``metrics.json`` as the result."""
    run_dir = scratch / f"train-{generator}-{steps}"
    overrides = [
        *GENERATORS[generator].overrides,
        f"trainer.max_steps={steps}",
        "~callbacks.artifacts",  # the pictures: after training, not in its time
        "naming.after_training=false",  # the part naming (dlib): after training, not in its time
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    run = measure([sys.executable, str(ROOT / "train.py"), *overrides], f"{generator}: panda, {steps} steps", scratch)
    run.result = json.loads((run_dir / "metrics.json").read_text())
    return run


def line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """``(fixed, per unit)`` of the line through the smallest and largest of ``points`` ``(units, value)``; with
    one point, or where noise makes either negative, no fixed part and the largest point's rate."""
    (n1, v1), (n2, v2) = min(points), max(points)
    per = (v2 - v1) / (n2 - n1) if n2 > n1 else 0.0
    fixed = v1 - per * n1
    if per <= 0 or fixed < 0:
        return 0.0, v2 / n2
    return fixed, per


def growth(points: list[tuple[float, float]]) -> float:
    """MiB each sample adds, between the smallest and largest of ``points`` ``(samples, peak MiB)`` (0 if none)."""
    (n1, m1), (n2, m2) = min(points), max(points)
    return max(0.0, (m2 - m1) / (n2 - n1)) if n2 > n1 else 0.0


@dataclass
class Cost:
    """A method's cost on one generator: ``fixed + per_sample * n`` seconds for ``n`` samples (``measured``: the
    sample counts run, with their seconds; ``any_samples``: the time does not depend on ``n``), and a peak memory
    of ``peak + peak_per_sample * (n - peak_at)`` MiB (``memory_extrapolated``: ``peak`` itself is)."""

    fixed: float
    per_sample: float
    measured: dict[int, float]
    peak: float
    peak_at: int
    how: str
    runs: list[Run]
    peak_per_sample: float = 0.0
    any_samples: bool = False
    memory_extrapolated: bool = False

    def seconds(self, samples: int) -> tuple[float, bool]:
        """Seconds at ``samples``, and whether they are extrapolated."""
        if samples in self.measured:
            return self.measured[samples], False
        return self.fixed + self.per_sample * samples, not self.any_samples

    def memory(self, samples: int) -> tuple[float, bool]:
        """Peak MiB at ``samples``, and whether it is extrapolated."""
        grows = self.peak_per_sample > 0 and samples != self.peak_at
        return self.peak + self.peak_per_sample * (samples - self.peak_at), grows or self.memory_extrapolated


@dataclass(frozen=True)
class Plan:
    """What runs. ``samples``: N; ``panda_steps``: PandA's training steps per generator; ``ganspace``: its sample
    counts; ``whole``: per generator whose whole Jacobians are affordable, the region methods' calibration counts
    (elsewhere chunks of ``chunks`` Jacobian columns of one sample, and of the default chunk when the memory
    those predict for it stays under ``memory_budget_mb``); ``stylespace``: its latents and the channels it
    scores; ``check_chunks``: also time chunks where whole Jacobians ran, to check the chunked estimate;
    ``defaults``: the benchmark's own sample count of each method."""

    samples: int
    panda_steps: dict[str, tuple[int, ...]]
    ganspace: tuple[int, ...]
    whole: dict[str, tuple[int, ...]]
    defaults: dict[str, int]
    chunks: tuple[int, ...] = (2, 4)
    memory_budget_mb: float = 6144.0
    stylespace: tuple[tuple[int, ...], int] = ((2, 4), 1)
    check_chunks: bool = True


def panda_cost(generator: str, plan: Plan, scratch: Path) -> Cost:
    """PandA's training at each of the plan's step counts; a line through their ``fit_seconds``."""
    runs = [train_run(generator, steps, scratch) for steps in plan.panda_steps[generator]]
    points = [(run.result["samples"], run.result["fit_seconds"]) for run in runs]
    fixed, per = line(points)
    ran = " and ".join(f"{run.result['steps']} steps ({run.result['samples']:,} samples)" for run in runs)
    how = f"`train.py` for {ran}; streams its samples: memory does not grow with N"
    return Cost(fixed, per, dict(points), max(run.peak_mb for run in runs), plan.samples, how, runs)


def fit_cost(generator: str, method: str, sizes: tuple[int, ...], scratch: Path) -> Cost:
    """A baseline fitted as the benchmark fits it at each of ``sizes`` samples, in one child process."""
    job = {"kind": "fit", "method": method, "sizes": list(sizes), "warmup": 1 if method in JACOBIAN else min(sizes)}
    what = method if method == "sefa" else f"{method}, " + " and ".join(f"{n:,}" for n in sizes) + " samples"
    run = job_run(generator, job, what, scratch)
    points = run.result["points"]
    times = [(n, seconds) for n, seconds, _ in points]
    at, _, peak = points[-1]
    if method == "sefa":
        how = "fitted once: it reads the weights that read the code, no samples"
        return Cost(times[0][1], 0.0, {}, peak, at, how, [run], any_samples=True)
    fixed, per = line(times)
    counts = " and ".join(f"{n:,}" for n in sizes)
    if method == "ganspace":
        peak_per = growth([(n, mb) for n, _, mb in points])
        how = f"fitted on {counts} samples; keeps every sample's activations: memory grows with N"
        return Cost(fixed, per, dict(times), peak, at, how, [run], peak_per)
    how = f"fitted on {counts} calibration samples, whole Jacobians; sums each sample's statistics: memory does "
    how += "not grow with N"
    return Cost(fixed, per, dict(times), peak, at, how, [run])


def jacobian_costs(generator: str, plan: Plan, scratch: Path) -> dict[str, Cost]:
    """LowRankGAN and ReSeFa from chunks of one sample's Jacobian columns (the same Jacobians; each its solves)."""
    job = {"kind": "jacobian", "chunks": list(plan.chunks), "budget_mb": plan.memory_budget_mb}
    run = job_run(generator, {**job, "twin": list(GENERATORS[generator].twin)}, "jacobian chunks", scratch)
    result = run.result
    columns, seconds, peak = result["chunks"][-1]
    dim, default = result["code_dim"], result["default_chunk"]
    per_sample = seconds * dim / columns + result["accumulate"]
    ran = ", ".join(str(c) for c, _, _ in result["chunks"])
    how = (
        f"chunks of {ran} of one sample's {dim} Jacobian columns: a sample = {dim} / {columns} x the chunk of "
        f"{columns} + accumulating the three regions' statistics; sums each sample's statistics: memory does not "
        "grow with N"
    )
    if columns != default:
        how += f"; memory at the default chunk of {default} from a line through the chunks' peaks"
        peak = result["predicted_mb"]
    return {
        name: Cost(
            result["solves"][name],
            per_sample,
            {},
            peak,
            plan.samples,
            how,
            [run],
            memory_extrapolated=columns != default,
        )
        for name in JACOBIAN
    }


def stylespace_cost(generator: str, plan: Plan, channels: int, scratch: Path) -> Cost:
    """StyleSpace from one region's fits scoring a few channels on two latent counts: the cost of a full forward of
    one latent, and the memory each latent adds."""
    sizes, keep = plan.stylespace
    job = {"kind": "stylespace", "sizes": list(sizes), "keep": keep}
    counts = " and ".join(map(str, sizes))
    run = job_run(generator, job, f"stylespace, {counts} samples, {keep} channel(s)", scratch)
    points = run.result["points"]
    fixed, per_latent = line([(n, seconds) for n, seconds, _ in points])
    # forwards of every latent in a region's fit: the styles' deviations, the unedited images, one per channel
    turns = keep + 2
    per_sample = REGIONS * (channels + 2) * per_latent / turns
    how = (
        f"one region's fit on {counts} latents scoring {keep} of the {channels:,} style channels ({turns} forwards of "
        f"every latent); a region = {channels:,} + 2 forwards of every latent, {REGIONS} regions; runs all N latents "
        "in one batch: memory grows with N"
    )
    at, _, peak = points[-1]
    return Cost(REGIONS * fixed, per_sample, {}, peak, at, how, [run], growth([(n, mb) for n, _, mb in points]))


def costs(generator: str, methods: tuple[str, ...], plan: Plan, base: Run, scratch: Path) -> dict[str, Cost | str]:
    """method -> its cost on ``generator``, or why it does not apply."""
    found: dict[str, Cost | str] = {}
    for method in methods:
        if method in found:
            continue
        if method == "panda":
            found[method] = panda_cost(generator, plan, scratch)
        elif method in ("ganspace", "sefa"):
            found[method] = fit_cost(generator, method, plan.ganspace if method == "ganspace" else (1,), scratch)
        elif method in JACOBIAN and generator in plan.whole:
            found[method] = fit_cost(generator, method, plan.whole[generator], scratch)
        elif method in JACOBIAN:
            found |= {name: c for name, c in jacobian_costs(generator, plan, scratch).items() if name in methods}
        elif not base.result["style_channels"]:
            found[method] = "no style channels"
        else:
            found[method] = stylespace_cost(generator, plan, base.result["style_channels"], scratch)
    return found


# ----- the report -------------------------------------------------------------------------------------------------
LABELS = {
    "panda": "PandA (training)",
    "ganspace": "GANSpace",
    "sefa": "SeFa",
    "lowrankgan": "LowRankGAN",
    "resefa": "ReSeFa",
    "stylespace": "StyleSpace",
}
Found = dict[str, dict[str, Cost | str]]  # generator -> method -> its cost, or why it does not apply


def duration(seconds: float) -> str:
    """``seconds`` in the unit that reads best."""
    if seconds < 100:
        return f"{seconds:.1f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.0f} days"


def mebibytes(value: float) -> str:
    return f"{value:,.0f} MiB" if value < 10 * 1024 else f"{value / 1024:,.0f} GiB"


def marked(text: str, extrapolated: bool) -> str:
    """``text``, marked when it is extrapolated."""
    return f"≈ {text} *" if extrapolated else text


def pivot(found: Found, methods: tuple[str, ...], value: Callable[[str, str, Cost], str]) -> list[str]:
    """A table of ``value(generator, method, cost)``: a row per method, a column per generator."""
    header = "| method | " + " | ".join(GENERATORS[g].label for g in found) + " |"
    rows = [header, "|---|" + "---|" * len(found)]
    for method in methods:
        cells = []
        for generator, by_method in found.items():
            cost = by_method.get(method, "not run")
            cells.append(cost if isinstance(cost, str) else value(generator, method, cost))
        rows.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return rows


def over_panda(found: Found, generator: str, cost: Cost, samples: int) -> str:
    """A baseline's seconds at ``samples`` over PandA's on the same generator."""
    panda = found[generator].get("panda")
    if not isinstance(panda, Cost):
        return "-"
    (seconds, a), (reference, b) = cost.seconds(samples), panda.seconds(samples)
    ratio = seconds / reference
    text = f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.1f}x" if ratio >= 1 else f"1/{1 / ratio:,.0f}"
    return marked(text, a or b)


def runs_of(bases: dict[str, Run], found: Found) -> list[Run]:
    """Every child process, in the order they ran (a run shared by two methods once)."""
    runs: dict[int, Run] = {}
    for generator, base in bases.items():
        runs[id(base)] = base
        for cost in found[generator].values():
            if isinstance(cost, Cost):
                runs |= {id(run): run for run in cost.runs}
    return list(runs.values())


def plot(found: Found, methods: tuple[str, ...], samples: int) -> bytes:
    """Seconds and peak memory at ``samples`` of each method against the generator; open markers: extrapolated."""
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    generators = list(found)
    for method in methods:
        points = [(i, found[g][method]) for i, g in enumerate(generators) if isinstance(found[g].get(method), Cost)]
        for ax, read, scale in ((axes[0], Cost.seconds, 1.0), (axes[1], Cost.memory, 1 / 1024)):
            values = [(i, *read(cost, samples)) for i, cost in points]
            (drawn,) = ax.plot([i for i, _, _ in values], [v * scale for _, v, _ in values], label=LABELS[method])
            for i, v, extrapolated in values:
                colour = drawn.get_color()
                ax.plot(i, v * scale, "o", color=colour, mfc="white" if extrapolated else colour)
    for ax, title in zip(axes, ("seconds to find the directions", "peak memory (GiB)"), strict=True):
        ax.set(yscale="log", title=f"{title}, N = {samples:,}")
        ax.set_xticks(range(len(generators)), [GENERATORS[g].label.replace(" (", "\n(") for g in generators])
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    figure.text(0.5, 0.01, "filled markers: measured; open: extrapolated", ha="center", fontsize=7)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def assumptions(plan: Plan, check: tuple[float, float] | None) -> list[str]:
    """The report's list of what the extrapolations assume."""
    items = [
        '- A method\'s time is a fixed part plus a cost per sample, each from its own runs ("Costs per sample"). '
        "Where two sample counts ran, the line through them; one count, its rate (with no fixed part).",
        "- PandA: its training on N samples = the line through its shorter runs' `fit_seconds` (the stats solver's "
        "rounds of 12 batches; its held-out features are computed at the first validation and kept, so later "
        "validations cost little). Its memory does not grow with the steps: it streams its samples.",
        "- LowRankGAN and ReSeFa compute one sample's Jacobian in chunks of `chunk` columns (16) through the "
        "whole synthesis; where a whole Jacobian takes too long, a sample costs (code dims / columns) x the time "
        "of the largest chunk timed, plus accumulating its three regions' statistics, timed once; their fixed "
        "part is their three solves. Both methods compute the same Jacobians: one set of runs serves both. Their "
        "memory is that of one chunk (the statistics are code dims x code dims); the default chunk runs only where "
        f"the memory the smaller chunks predict for it stays under {plan.memory_budget_mb / 1024:.0f} GiB (this "
        "machine is shared), elsewhere its memory is that prediction and its time per column the largest chunk's.",
        "- The baselines' runs start with an untimed warm-up (one sample; a chunk through a small twin of the "
        "generator for the Jacobians): the first call of torch's forward-mode products pays a one-time start-up of "
        "seconds that a process pays once. PandA's times are `train.py`'s own.",
        "- StyleSpace fits each region on its own; a region's fit is two forwards of all N latents (their "
        "styles' standard deviations and the unedited images) and one per style channel; the cost of one "
        "latent's forward comes from fits scoring a few channels on two latent counts. It runs all N latents in "
        "one batch, so its memory grows by what each latent added between those fits.",
        "- GANSpace keeps the activations of all its samples: its memory grows by what each sample added between "
        "its two runs.",
        "- The region methods' masks are fixed boxes: their time does not depend on what the masks hold.",
    ]
    if check is not None:
        predicted, measured = check
        items.append(
            f"- Check of the chunked Jacobian estimate on the DCGAN, where whole Jacobians ran: chunks predict "
            f"{predicted:.3g} s a sample, the whole fits took {measured:.3g} s a sample "
            f"({predicted / measured:.2f}x)."
        )
    return items


def report(
    command: str,
    plan: Plan,
    methods: tuple[str, ...],
    bases: dict[str, Run],
    found: Found,
    check: tuple[float, float] | None,
    loads: tuple[tuple[float, ...], tuple[float, ...]],
    minutes: float,
    image: str,
) -> str:
    """The report's text, without its reading."""
    n = plan.samples
    threads = next(iter(bases.values())).result["threads"]

    def seconds_at(samples: Callable[[str], int]) -> Callable[[str, str, Cost], str]:
        return lambda _g, method, cost: marked(
            duration(cost.seconds(samples(method))[0]), cost.seconds(samples(method))[1]
        )

    baselines = tuple(m for m in methods if m != "panda")
    lines = [
        "# Time and memory to find edit directions, as the generator grows",
        "",
        f"Produced by `{command}` in {minutes:.0f} min on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), {threads} torch thread(s) in each measurement (`--threads`: "
        "on cores other jobs share, more OpenMP threads than free cores slow small operations down by several "
        "times, and unevenly across methods). Load average "
        f"(1, 5, 15 min): {', '.join(f'{x:.2f}' for x in loads[0])} at the start, "
        f'{", ".join(f"{x:.2f}" for x in loads[1])} at the end, and around each run in "What ran". **Other jobs '
        "shared these cores while measuring**: the times say what ran here, not what the cores can do.",
        "",
        f"Every method gets the same number of samples, **N = {n:,}**: PandA trains on N samples (its held-out set "
        "on top, in its time), GANSpace draws N, LowRankGAN, ReSeFa and StyleSpace are fitted on N calibration "
        "latents (to three regions' masks, as the ROIR benchmark fits them), SeFa reads weights only. Each time is "
        "what the ROIR benchmark reports as the method's seconds to find its directions (PandA: `fit_seconds` of "
        "its training). Values marked * are extrapolated from measured costs (see the assumptions); the others "
        "were measured at N. The script's docstring says how each method is run.",
        "",
        f"## Seconds to find the directions, N = {n:,}",
        "",
        *pivot(found, methods, seconds_at(lambda _method: n)),
        "",
    ]
    if "panda" in methods and baselines:
        lines += [
            f"### Each baseline's time over PandA's, N = {n:,}",
            "",
            *pivot(found, baselines, lambda g, _m, cost: over_panda(found, g, cost, n)),
            "",
        ]
    lines += [
        f"## Peak memory, N = {n:,}",
        "",
        'The child process\'s peak resident set, Python, torch and the generator included ("The generators" '
        "gives a process with the generator alone; PandA's runs are whole `train.py` processes, Lightning and "
        "Hydra included).",
        "",
        *pivot(found, methods, lambda _g, _m, cost: marked(mebibytes(cost.memory(n)[0]), cost.memory(n)[1])),
        "",
        "## Seconds at the benchmark's own sample counts",
        "",
        f"PandA at its default training ({plan.defaults['panda']:,} samples), GANSpace at its `samples` "
        f"({plan.defaults['ganspace']:,}), the region methods at the benchmark's calibration samples "
        f"({plan.defaults['resefa']:,}; with real faces, those where dlib finds a face), SeFa without samples.",
        "",
        *pivot(found, methods, seconds_at(lambda method: plan.defaults[method])),
        "",
        "## Costs per sample",
        "",
        "| generator | method | fixed s | s per sample | how |",
        "|---|---|---|---|---|",
        *[
            f"| {GENERATORS[g].label} | {LABELS[m]} | {c.fixed:.3g} | {c.per_sample:.3g} | {c.how} |"
            for g, by_method in found.items()
            for m, c in by_method.items()
            if isinstance(c, Cost)
        ],
        "",
        "## The generators",
        "",
        "| generator | image | PandA's layer (C x H x W) | code dims | style channels | loaded (MiB) "
        "| forward to PandA's layer (ms a sample) | full forward (ms a sample) | full / to the layer |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {GENERATORS[g].label} | {b.result['image']} px | {' x '.join(map(str, b.result['layer_shape']))} "
            f"| {b.result['code_dim']} | {b.result['style_channels'] or '-'} | {b.result['loaded_mb']:,.0f} "
            f"| {b.result['truncated_s'] * 1e3:.1f} | {b.result['full_s'] * 1e3:.1f} "
            f"| {b.result['full_s'] / b.result['truncated_s']:.1f}x |"
            for g, b in bases.items()
        ],
        "",
        "## What ran",
        "",
        "| run | wall s (the child process) | peak MiB | load (1 min) before -> after |",
        "|---|---|---|---|",
        *[
            f"| {run.what} | {run.seconds:.1f} | {run.peak_mb:,.0f} | {run.load[0]:.2f} -> {run.load[1]:.2f} |"
            for run in runs_of(bases, found)
        ],
        "",
        "## Assumptions",
        "",
        *assumptions(plan, check),
        "",
        f"![seconds and peak memory at N = {n:,}]({image})",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=None, help="N (default: PandA's default training samples)")
    parser.add_argument("--tiny", action="store_true", help="a quick check: ReSeFa on the DCGAN, N = 2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results", help="the report's folder")
    args = parser.parse_args()
    if (args.samples is not None and args.samples < 1) or args.threads < 1:
        parser.error("--samples and --threads must be >= 1")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the children's torch threads
    train, roir = compose("train"), compose("evaluate", ["task=roir"]).eval
    default_samples = train.trainer.max_steps * train.data.batch_size
    defaults = {"panda": default_samples, "ganspace": roir.baselines.ganspace.samples, "sefa": 0}
    defaults |= dict.fromkeys((*JACOBIAN, "stylespace"), roir.calibration)
    if args.tiny:
        samples = args.samples or 2
        generators, methods = ("dcgan64",), ("resefa",)
        plan = Plan(samples, {}, (samples,), {"dcgan64": (1, 2)}, defaults, check_chunks=False)
    else:
        samples = args.samples or default_samples
        generators, methods = tuple(GENERATORS), METHODS
        steps = train.trainer.max_steps
        panda_steps = {"dcgan64": (steps // 2, steps), "stylegan2_256": (12, 36), "stylegan2_1024": (12, 36)}
        ganspace = tuple(sorted({defaults["ganspace"], samples}))
        plan = Plan(samples, panda_steps, ganspace, {"dcgan64": (16, roir.calibration)}, defaults)

    start, loads = time.perf_counter(), [os.getloadavg()]
    bases: dict[str, Run] = {}
    found: Found = {}
    check = None
    with tempfile.TemporaryDirectory(prefix="scaling-methods-") as scratch:
        for generator in generators:
            batches = {"batch": 64, "full_batch": 64} if generator == "dcgan64" else {"batch": 16, "full_batch": 2}
            bases[generator] = job_run(generator, {"kind": "forwards", **batches}, "forwards", Path(scratch))
            found[generator] = costs(generator, methods, plan, bases[generator], Path(scratch))
            whole = found[generator].get("resefa")
            if plan.check_chunks and generator in plan.whole and isinstance(whole, Cost):
                chunked = jacobian_costs(generator, plan, Path(scratch))["resefa"]
                check = (chunked.per_sample, whole.per_sample)
    loads.append(os.getloadavg())
    minutes = (time.perf_counter() - start) / 60

    args.out.mkdir(parents=True, exist_ok=True)
    name = "scaling_methods"
    command = " ".join(["python experiments/scaling_methods.py", *sys.argv[1:]])
    text = report(command, plan, methods, bases, found, check, (loads[0], loads[1]), minutes, f"{name}.png")
    path = args.out / f"{name}.md"
    reading = path.read_text().partition(READING)[2] if path.is_file() else ""
    atomic_write(args.out / f"{name}.png", plot(found, methods, samples))
    atomic_write(path, (text + (f"{READING}{reading}" if reading else "")).encode())
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
