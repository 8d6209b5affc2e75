"""Sweeps: ordinary runs that differ in a few knobs, trained under one budget, compared in one table.

    python -m tinylab.sweep NAME --preset ittybitty --grid tie_embeddings=false,true head_dim=64,128 --flops 1e16
    python -m tinylab.sweep NAME --spec docs/sweeps/arch-questions/spec.json
    python -m tinylab.sweep NAME           # again: finished points are skipped, an interrupted one resumes
    python -m tinylab.sweep NAME --plan    # every point, its budget and what is wrong with it; trains nothing

    run_sweep("my-sweep", dict(preset="smoke", grid={"tie_embeddings": [False, True]}))   # from a notebook

A spec (a JSON object, or the flags above) has these keys, each knob set in one place (a knob that the
spec's knobs and the grid or a point both set, or that one of them sets twice, under its alias or not,
is refused rather than one value silently winning):
    preset       the base of every point
    knobs        knob values for every point, on top of the preset (on the command line: the knob flags)
    grid         knob -> list of values; every combination is a point
    points       explicit points, each a dict of knobs (and optionally its own "preset"), for questions
                 that are not a grid; they come after the grid's points
    budget       {"tokens": N}: equal tokens. {"flops": F}: equal training FLOPs (compute-matched), each
                 point gets tokens = F / flops_per_token. {"seconds": S}: equal training time on this
                 machine (see below). No budget: each point trains as its config says.
    probes       true: run the probe suite at each point's last step
    description  free text

Each point is an ordinary run, runs/<sweep>/<point>/, so every notebook and CLI reads it. Its name is
the knobs it sets, in the order given ("tie_embeddings-true_head_dim-128"; a point that sets none is
"base"). Every point's config is resolved before anything trains: an unknown knob or a value its knob
cannot take stops the sweep at once, while an illegal combination (a head_dim that does not divide
model_dim) is named up front and recorded as `invalid`, and the other points go on. A point that fails
while training (out of memory, a NaN loss: any TinylabError) is recorded as `failed` with its message,
and the sweep goes on. Running the sweep again skips finished points and resumes an interrupted one.

Budgets. Steps = round(tokens / total_batch_size), so equal FLOPs holds to within one optimizer step. A
point whose whole steps miss a tokens or FLOPs budget by more than BUDGET_TOLERANCE (10%, only when the
budget is under 5 of its steps, e.g. when one step already overshoots it) is recorded as `invalid`: it
would not be compared at an equal budget.
Equal wall time calibrates rather than changing the trainer: each point first trains CALIBRATION_STEPS
steps as a throwaway run; its median tokens/s (the first step, which compiles, left out) turns seconds
into tokens, and from there it is a token budget. The LR schedule stays a function of the step, so a
point resumes and reproduces like any other run, and the rates are kept in calibration.json, so running
the sweep again never changes a point's step count. The alternative, a time-driven loop, would make
the step count depend on timing noise and break exact resume.

Devices. With two or more GPUs visible (or --devices 0,1), each point is a plain subprocess,
`python -m tinylab.train ... --resume` with CUDA_VISIBLE_DEVICES set to one GPU, taken from a queue:
when a point finishes, the next starts on its GPU. This process first trains every tokenizer and
pre-tokenizes every corpus the points need, so no two processes ever train the same tokenizer. On one
GPU or the CPU the points train in order, in this process.

Results: runs/<sweep>/results.csv, one row per point (RESULT_COLUMNS), rewritten atomically after every
point; tinylab.sweeps loads it into pandas and draws notebook 07's figures and answer table.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
import sys
from pathlib import Path

from tqdm.auto import tqdm

from . import calc, paths
from .config import TrainConfig, add_knob_arguments, knob_arguments, knob_names
from .devices import pick_device
from .errors import ArgumentParser, RunFailedError, TinylabError, cli
from .gpuqueue import Job, gpu_ids, gpu_slots, run_queue, subprocess_device, train_argv
from .presets import PRESETS, preset_from_env
from .run import NAME_PART, SWEEP_SPEC, Run, RunError
from .schedule import RunPlan
from .sweepspec import BUDGETS, Point, Spec, SweepError, parse_grid, parse_point, resolve_points, with_budget

CALIBRATION_STEPS = 8  # step 1 compiles; the median of the other 7 is the steady rate
CALIBRATION_KNOBS = dict(num_iterations=CALIBRATION_STEPS, log_every=1, eval_every=CALIBRATION_STEPS, eval_tokens=1,
                         save_every=0, sample_every=0)
RESULTS, CALIBRATION, LOGS = "results.csv", "calibration.json", "logs"
PARAM_COLUMNS = ["params_wte", "params_blocks", "params_lm_head", "params_total"]
METRIC_COLUMNS = ["seconds", "tok_per_s", "mfu", "peak_mem_gb", "val_bpb", "probe_accuracy", "core"]
RESULT_COLUMNS = ["point", "status", "error", "run", "preset", *knob_names(), *PARAM_COLUMNS, "flops_per_token",
                  "tokens_per_step", "steps", "tokens", "flops", *METRIC_COLUMNS]


# ------------------------------------------------------------------------------- one run's outcome

def run_status(run: Run, cfg: TrainConfig | None) -> str:
    """done (finished as cfg plans it: checkpoint.finished), partial (a checkpoint, unfinished or of another plan)
    or pending (none)."""
    from .checkpoint import finished

    ckpt = run.latest_checkpoint()
    if ckpt is None:
        return "pending"
    plan = (cfg.model, RunPlan.of(cfg).num_iterations) if cfg is not None else (None, None)
    return "done" if finished(ckpt, *plan) else "partial"


def metrics_summary(run: Run) -> dict:
    """What a run's metrics.jsonl says: training seconds (compile included, evaluations not), median tokens/s
    and MFU, peak memory, and the last val bpb, probe accuracy and CORE score (records of kind probes / core,
    read by name, so a log without them simply has none)."""
    records = run.metrics.read()
    train = [r for r in records if r.get("kind") == "train"]

    def numbers(recs, name):
        return [r[name] for r in recs if isinstance(r.get(name), (int, float)) and not isinstance(r[name], bool)]

    def last(kind, name):
        found = numbers([r for r in records if r.get("kind") == kind], name)
        return found[-1] if found else None

    def median(name):
        found = numbers(train, name)
        return statistics.median(found) if found else None

    mem = numbers(train, "mem_gb")
    return dict(seconds=last("train", "elapsed"), tok_per_s=median("tok_per_s"), mfu=median("mfu"),
                peak_mem_gb=max(mem) if mem else None, val_bpb=last("eval", "val_bpb"),
                probe_accuracy=last("probes", "accuracy"), core=last("core", "core"))


def calibration_rate(run: Run) -> float:
    """Steady tokens/s of a calibration run: the median over its steps after the first (which compiles)."""
    rates = [r["tok_per_s"] for r in run.metrics.read() if r.get("kind") == "train" and r.get("step", 0) > 1]
    if not rates:
        raise RunFailedError(f"calibration run {run.name!r} logged no steady steps; see {run.metrics.path}")
    return statistics.median(rates)


def release_compiled() -> None:
    """Forget the last point's compiled graphs (model.forget_compiled) and cached GPU memory."""
    import torch

    from .model import forget_compiled

    forget_compiled()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------- the sweep

def fmt(value, spec: str) -> str:
    return "?" if value is None else format(value, spec)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PART.fullmatch(name) or len(name) > 100:
        raise SweepError(f"{name!r} is not a usable sweep name: use letters, digits, '.', '-' and '_' "
                         f"(it names the directory runs/<sweep>/), e.g. heads-vs-vocab")
    return name


class Sweep:
    """A sweep's directory, runs/<name>/ (spec.json, results.csv, calibration.json, logs/, and its points)."""

    def __init__(self, name: str, spec: Spec):
        self.name, self.spec = check_name(name), spec
        self.dir = paths.home() / "runs" / name
        if Run(self.dir).exists():
            raise SweepError(f"runs/{name} is a run, not a sweep: give the sweep another name")
        self.points = resolve_points(spec, self.read_json(CALIBRATION) or {})

    @classmethod
    def open(cls, name: str, spec: "Spec | dict | str | Path | None" = None) -> "Sweep":
        """Sweep `name` with `spec` (a Spec, a dict or a JSON file), or as stored when it was started."""
        stored = paths.home() / "runs" / check_name(name) / SWEEP_SPEC
        if spec is None:
            if not stored.is_file():
                raise SweepError(f"sweep {name!r} has not been started ({stored} does not exist): give a spec "
                                 f"(--spec FILE, or --preset P --grid KNOB=A,B)")
            return cls(name, Spec.load(stored))
        if not isinstance(spec, Spec):
            spec = Spec.from_dict(spec) if isinstance(spec, dict) else Spec.load(spec)
        if stored.is_file() and not Spec.load(stored).same_sweep(spec):
            raise SweepError(f"sweep {name!r} was started with a different spec ({stored}): run it again as it is "
                             f"(`python -m tinylab.sweep {name}`), pick a new name, or delete {stored.parent}")
        return cls(name, spec)

    def read_json(self, filename: str):
        path = self.dir / filename
        return json.loads(path.read_text()) if path.is_file() else None

    def run_of(self, p: Point) -> Run:
        return Run.at(f"{self.name}/{p.name}")

    def status(self, p: Point) -> str:
        return p.failed or run_status(self.run_of(p), p.config)

    def todo(self) -> list[Point]:
        return [p for p in self.points if self.status(p) in ("pending", "partial")]

    # -- what it will do -----------------------------------------------------------------
    def plan_rows(self) -> list[dict]:
        """One row per point: name, status, parameters, steps, tokens and FLOPs of its budget, its problem."""
        rows = []
        for p in self.points:
            row = dict(point=p.name, status=self.status(p), params=None, steps=None, tokens=None, flops=None,
                       error=p.error)
            if p.base is not None:
                plan = RunPlan.of(p.config or p.base)
                steps = plan.num_iterations if p.config else None
                tokens = None if steps is None else plan.tokens_at(steps)
                row.update(params=plan.params, steps=steps, tokens=tokens,
                           flops=None if tokens is None else tokens * plan.flops_per_token)
            rows.append(row)
        return rows

    def describe(self) -> str:
        """The plan as text: a header, one line per point, then the invalid points and why."""
        s, rows = self.spec, self.plan_rows()
        lines = [f"sweep {self.name}: {len(rows)} points of preset {s.preset}, {s.budget_text}",
                 f"  {'point':<40} {'params':>12} {'steps':>7} {'tokens':>14} {'FLOPs':>10}  status"]
        for r in rows:
            lines.append(f"  {r['point']:<40} {fmt(r['params'], ','):>12} {fmt(r['steps'], ','):>7} "
                         f"{fmt(r['tokens'], ','):>14} {fmt(r['flops'], '.3g'):>10}  {r['status']}")
        lines += [f"  invalid {r['point']}: {r['error']}" for r in rows if r["status"] == "invalid"]
        return "\n".join(lines)

    # -- doing it ------------------------------------------------------------------------
    def run(self, *, device=None, devices=None, progress: bool = True, callback=None) -> list[dict]:
        """Train every point not finished yet (module docstring); return the results table's rows."""
        tqdm.write(self.describe())
        valid = [p for p in self.points if not p.failed]
        if not valid:  # before anything is written, so the corrected spec is not refused as "a different spec"
            raise SweepError(f"every point of sweep {self.name!r} is invalid (see above): fix the grid or points")
        slots = gpu_slots(device, devices)  # refuses GPUs that are not there before anything is written
        if not slots:
            pick_device(device)  # so does training in this process, on its device
        self.dir.mkdir(parents=True, exist_ok=True)
        paths.atomic_write(self.dir / SWEEP_SPEC, self.spec.to_json())
        self.prepare(valid, progress)
        child_device = subprocess_device(device)
        if any(p.config is None and not p.failed for p in self.points):
            self.calibrate(slots, child_device if slots else device, progress)
        try:
            if slots:
                self.train_children(slots, child_device, progress)
            else:
                self.train_here(device, progress, callback)
        finally:
            self.write_results()
        return self.rows()

    def prepare(self, points: list[Point], progress: bool) -> None:
        """Train each tokenizer and pre-tokenize its corpus here, once, before any point starts, so parallel
        children only read them. A tokenizer that cannot be trained fails the points that need it."""
        from .tokens import prepare_tokens

        groups: dict[tuple[str, int], list[Point]] = {}
        for p in points:  # by num_shards too: its splits differ (and a tokenizer of other shards is refused)
            groups.setdefault((p.base.tokenizer_name, p.base.data.num_shards), []).append(p)
        for (name, _), group in groups.items():
            cfg = group[0].base
            try:
                prepare_tokens(cfg, progress=progress)
            except TinylabError as e:
                for p in group:
                    p.error, p.failed = f"tokenizer {name}: {e}", "failed"

    def calibrate(self, slots: list[str], device, progress: bool) -> None:
        """Seconds budget: each point's tokens/s from a throwaway run of CALIBRATION_STEPS steps, kept in
        calibration.json; then every point's steps (module docstring)."""
        rates = self.read_json(CALIBRATION) or {}
        todo = [p for p in self.points if p.config is None and not p.failed]
        runs = {p.name: f"{self.name}/calibration-{p.name}" for p in todo}  # inside the sweep: nothing else is touched
        configs = {p.name: p.base.override(**CALIBRATION_KNOBS) for p in todo}
        if slots:
            jobs = [Job(n, train_argv(configs[n], runs[n], device, "--overwrite"),
                        self.dir / LOGS / f"{n}.calibration.log") for n in runs]
            errors = {job.name: err for job, code, err in run_queue(jobs, slots) if code}
        else:
            from .train import train

            errors = {}
            for p in tqdm(todo, desc=f"calibrating {self.name}", unit="point", disable=not progress):
                try:
                    train(configs[p.name], runs[p.name], overwrite=True, device=device, progress=False)
                except TinylabError as e:
                    errors[p.name] = str(e)
                finally:
                    release_compiled()
        for p in todo:
            try:
                if p.name in errors:
                    raise RunFailedError(errors[p.name])
                rates[p.name] = calibration_rate(Run.at(runs[p.name]))
            except TinylabError as e:
                p.error, p.failed = f"calibration: {e}", "failed"
                continue
            p.config = with_budget(self.spec, p.base, rates[p.name])
        for name in runs.values():
            shutil.rmtree(Run.at(name).dir, ignore_errors=True)
        paths.atomic_write(self.dir / CALIBRATION, json.dumps(rates, indent=1))

    def train_here(self, device, progress: bool, callback) -> None:
        """One point after another in this process; a TinylabError fails the point, anything else stops the sweep."""
        from .train import train

        todo = self.todo()
        for i, p in enumerate(tqdm(todo, desc=f"sweep {self.name}", unit="point", disable=not progress)):
            try:
                train(p.config, self.run_of(p).name, resume=self.status(p) == "partial", device=device,
                      progress=progress, callback=callback)
            except TinylabError as e:
                p.error, p.failed = str(e), "failed"
            finally:
                release_compiled()
            self.finished(p, i + 1, len(todo))

    def train_children(self, slots: list[str], device: str, progress: bool) -> None:
        """One subprocess per GPU slot (module docstring), a point per process."""
        todo = {p.name: p for p in self.todo()}
        jobs = [Job(p.name, train_argv(p.config, self.run_of(p).name, device,
                                       *["--resume"] * (self.status(p) == "partial")),
                    self.dir / LOGS / f"{p.name}.log") for p in todo.values()]
        where = f"GPUs {', '.join(slots)}" if device.startswith("cuda") else f"{len(slots)} {device} processes"
        tqdm.write(f"training {len(jobs)} point(s) on {where}, one each; logs in {self.dir / LOGS}")
        with tqdm(total=len(jobs), desc=f"sweep {self.name}", unit="point", disable=not progress) as bar:
            for i, (job, code, error) in enumerate(run_queue(jobs, slots)):
                if code:
                    todo[job.name].error, todo[job.name].failed = error, "failed"
                bar.update(1)
                self.finished(todo[job.name], i + 1, len(jobs))

    def finished(self, p: Point, i: int, n: int) -> None:
        row = self.row(p)
        bpb = "" if row["val_bpb"] is None else f", val bpb {row['val_bpb']:.4f}"
        took = "" if row["seconds"] is None else f" in {row['seconds']:.0f} s"
        tqdm.write(f"[{i}/{n}] {p.name}: {row['status']}{bpb}{took}" + (f": {p.error}" if p.failed else ""))
        self.write_results()

    # -- results -------------------------------------------------------------------------
    def row(self, p: Point) -> dict:
        """The point's row of results.csv (RESULT_COLUMNS)."""
        row = dict.fromkeys(RESULT_COLUMNS)
        run = self.run_of(p)
        cfg = p.config or p.base
        row.update(point=p.name, status=self.status(p), error=p.error, run=run.name,
                   preset=cfg.name if cfg else p.knobs.get("preset", self.spec.preset))
        if cfg is None:  # invalid: only what the point asked for
            row.update({k: v for k, v in {**self.spec.knobs, **p.knobs}.items() if k in row})
            return row
        plan, counts = RunPlan.of(cfg), calc.param_counts(cfg.model)
        row.update(cfg.flat(), params_wte=counts["wte"], params_blocks=counts["blocks"],
                   params_lm_head=counts["lm_head"], params_total=counts["total"],
                   flops_per_token=plan.flops_per_token, tokens_per_step=plan.batch.total_batch_size)
        if p.config is not None:
            tokens = plan.tokens_at(plan.num_iterations)
            row.update(steps=plan.num_iterations, tokens=tokens, flops=tokens * plan.flops_per_token)
        try:
            row.update(metrics_summary(run))
        except RunError as e:
            row["error"] = row["error"] or str(e)
        return row

    def rows(self) -> list[dict]:
        return [self.row(p) for p in self.points]

    def write_results(self) -> Path:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, RESULT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: " ".join(v.split()) if isinstance(v, str) else v for k, v in row.items()}
                         for row in self.rows())
        return paths.atomic_write(self.dir / RESULTS, buf.getvalue())


def plan_sweep(name: str, spec: "Spec | dict | str | Path | None" = None) -> Sweep:
    """Sweep `name` resolved (every point's config, budget and problem) without training or writing anything."""
    return Sweep.open(name, spec)


def run_sweep(name: str, spec: "Spec | dict | str | Path | None" = None, *, device=None, devices=None,
              progress: bool = True, callback=None) -> list[dict]:
    """Run sweep `name` (module docstring): the spec the first time (a dict, a Spec or a JSON file), nothing or
    the same spec after that. device: where the points train in this process ("cpu", "cuda:0"); devices:
    GPU ids to train on in parallel, one point each (default: every visible GPU when there are two or more).
    callback(record) gets every metrics record of in-process training. Returns results.csv's rows."""
    return Sweep.open(name, spec).run(device=device, devices=devices, progress=progress, callback=callback)


# ------------------------------------------------------------------------------- CLI

def spec_from_args(a, knobs: dict):
    """The spec the command line gives: --spec FILE, or --preset/--grid/--point/budget/knob flags, or None."""
    budget = {k: getattr(a, k) for k in BUDGETS if getattr(a, k) is not None}
    inline = a.grid or a.point or budget or knobs or a.probes or a.preset
    if a.spec:
        if inline:
            raise SweepError("--spec takes the whole sweep from its file: put the grid, points, budget and knobs "
                             "there instead of on the command line")
        return a.spec
    if not inline:
        return None
    if "tokens" in budget and not float(budget["tokens"]).is_integer():
        raise SweepError(f"--tokens must be a whole number, got {budget['tokens']}")
    return dict(preset=a.preset or preset_from_env().name, knobs=knobs, grid=parse_grid(a.grid or []),
                points=[parse_point(p) for p in a.point or []], budget=budget, probes=a.probes)


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m tinylab.sweep", description=__doc__.split("\n")[0])
    p.add_argument("name", help="the sweep's name: its runs go to $TINYLAB_HOME/runs/<name>/<point>/")
    p.add_argument("--spec", help="a JSON spec file (instead of --preset/--grid/--point/budget/knob flags)")
    p.add_argument("--preset", help=f"base preset of every point: {', '.join(PRESETS)}")
    p.add_argument("--grid", nargs="+", action="extend", metavar="KNOB=A,B",  # a second --grid adds axes
                   help="grid axes, e.g. tie_embeddings=false,true head_dim=64,128")
    p.add_argument("--point", nargs="+", action="append", metavar="KNOB=V", help="one explicit point (repeatable)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--tokens", type=float, help="equal tokens per point")
    budget.add_argument("--flops", type=float, help="equal training FLOPs per point (compute-matched)")
    budget.add_argument("--seconds", type=float, help="equal training seconds per point (calibrated on this machine)")
    p.add_argument("--probes", action="store_true", help="run the probe suite at each point's last step")
    p.add_argument("--plan", action="store_true", help="print the points, their budgets and problems; train nothing")
    p.add_argument("--device", help="train in this process on this device (cpu, cuda:0), or the device of each "
                                    "parallel point with --devices (default cuda)")
    p.add_argument("--devices", type=gpu_ids, help="GPU ids to train on in parallel, one point each, e.g. 0,1 "
                                                   "(default: every visible GPU when there are two or more)")
    p.add_argument("--no-progress", action="store_true")
    add_knob_arguments(p)
    a = p.parse_args(argv)
    sweep = Sweep.open(a.name, spec_from_args(a, knob_arguments(a)))
    if a.plan:
        print(sweep.describe())
        return 0
    rows = sweep.run(device=a.device, devices=a.devices, progress=not a.no_progress)
    bad = [r for r in rows if r["status"] != "done"]
    print(f"results: {sweep.dir / RESULTS} ({len(rows) - len(bad)} of {len(rows)} points done)")
    if bad:
        raise (RunFailedError if any(r["status"] != "invalid" for r in bad) else SweepError)(
            f"{len(bad)} point(s) not done: " + "; ".join(f"{r['point']} ({r['status']})" for r in bad))
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
