"""Test-time compute laws fitted from the project's own models: a family of byte-level transformers
trained on a mixture of the embedded corpus and a verifiable task, each sampled many times per
held-out problem, pass@k laws fitted per model and across models.

    python -m experiments.studies.inference_compute --workdir runs/tts --preset cpu        # the study
    python -m experiments.studies.inference_compute --workdir runs/tts_ci --preset smoke   # CI (tests)
    python -m experiments.studies.inference_compute --workdir runs/tts --preset cpu --set samples=256

Presets and cost (2-core CPU machine; training FLOPs "6N"):
  smoke  2 sizes x 2 budgets (4 runs, ~10k-30k params), 1-2 digit reversed addition,
         24 problems x 32 samples, one kept checkpoint per run; measured 2026-12-04: 4.4 min
         wall on the shared 2-core machine (load ~12); 2026-12-07: 176.7 CPU-s, of which the
         task stage and the two-step prediction +19.6 CPU-s
  cpu    3 sizes x 3 budgets (9 runs, 30k-200k params, 5e11-1.5e12 FLOPs), 1-3 digit
         reversed addition, 40 problems per difficulty x 128 samples, 3 kept checkpoints per
         run; measured 2026-12-04 (no task stage): 11.8 CPU-min, 21 min wall on the 2-core
         machine shared with other jobs (load 7-10); 2026-12-07 with the task stage: 17.2 CPU-min,
         58 min wall (load 8-15). Held out (the largest model, 196k params at 1.5e12): pass@1
         0.0153 measured; two-step 0.0252 (sigmoid, +65%) and 0.0243 (Gadre's error law, +59%),
         bands covering it; coverage_compute_law 0.0319 (+108%), band missing it
  gpu    4 sizes x 3 budgets, seq 256, bf16, 1-4 digits, 1,000 samples (estimate, not measured)

The study (Brown et al. 2024, "Large Language Monkeys", arXiv:2407.21787; Schaeffer et al. 2025,
"How Do Large Language Monkeys Get Their Power (Laws)?"; Lee et al. 2023 for the task):
- train: every (size, budget) run reads a mixture of the Python-stdlib corpus and reversed
  addition documents (``data.mixture``; part of each run's config and id).
- measure (`counts.csv`, resumable per problem): n samples per held-out problem at temperature 1;
  c = exactly correct, c_weak = accepted by the weak checker (length and units digit right).
- measure (`task.csv`, resumable per checkpoint): each run keeps its checkpoints at
  ``task_checkpoints`` x its steps (``train.keep_steps``); at those and the final one, the answer's
  teacher-forced NLL (task loss, nats per answer) and the expected pass@1 at the sampling
  temperature, mean_i exp(-NLL_i) (`experiments.measures.task_loss`).
- analyze (`experiments.reports.pass_at_k`): per model `pass_at_k_beta`, the zero-inflated Beta
  and `coverage_power_law`; across models -log pass@k at fixed k as a power law of training compute;
  `verifier_ceiling` on best-of-k accuracy under the weak checker; the training + sampling compute
  frontier (which model and k reach the highest pass rate for a total budget); held-out checks
  (16 of n samples predict pass@n; the smaller budgets predict the largest one's pass@k); the
  two-step task prediction (Bhagia et al. 2024, `experiments.reports.task_prediction`): chinchilla
  task loss from (N, D), then pass@1 from task loss (accuracy_sigmoid; Gadre et al. 2024's
  error_exponential), chained bands, the largest model held out beside coverage_compute_law.

The run recipe (shape rule, batch and learning-rate rules, steps, seeds, base config, --set) is
`experiments.runner.recipe.Recipe`; this file declares the family, the task mixture and the
sampling. It was `experiments.test_time_scaling` (that command still works, with a
DeprecationWarning); the study's name in its outputs stays "test_time_scaling".
"""

from __future__ import annotations

import dataclasses
import math

from experiments.harness import cli
from experiments.harness.config import Config
from experiments.reports import pass_at_k as report
from experiments.runner.measure import Measure
from experiments.runner.recipe import Recipe, base_config, command, derive, steps_of

SMOKE = {"fixture": "tts_smoke", "workdir": "runs/tts_ci", "notebook": "TTS_WORKDIR",
         "command": "python -m experiments.studies.inference_compute --workdir runs/tts_ci --preset smoke"}


@dataclasses.dataclass(frozen=True)
class Study(Recipe):
    """A test-time-compute study: sizes x budgets x seeds trained on a task mixture, sampled.

    sizes: target total parameter counts (the recipe's shape rule).
    budgets: training FLOPs ("6N") of every size; tokens D = budget / (6 N).
    task / task_share: the task dataset (`experiments.harness.tasks`) and its share of training tokens.
    difficulties / problems_per_difficulty: which held-out problems are sampled.
    samples: n, samples per problem; temperature: sampling temperature.
    queries: the number of problems a deployed model answers, for the training + sampling
      compute trade-off (total = training FLOPs + queries x k x FLOPs per sample).
    task_checkpoints: fractions of each run's steps whose checkpoints are kept for the two-step
      task prediction (task.csv also measures the final one).
    task_step1: "final" (step 1 fitted on the final checkpoints) or "all" (every checkpoint).
    task_bootstrap: bootstrap draws of both steps (the chained band) and of the comparison law.
    seeds, rows_per_step, lr, lr_scale, min_steps, base, mesh: the recipe's rules.
    """

    name: str = "test_time_scaling"
    min_steps: int = 50
    # row shuffle in windows of 2^17 tokens: the default 4.2M would exceed a whole run of
    # 10-token task documents and stall the first batch
    base: Config = base_config(data={"eval_sequences": 256, "shuffle_tokens": 2**17})
    sizes: tuple[float, ...] = (3e4, 8e4, 2e5)
    budgets: tuple[float, ...] = (5e11, 8.7e11, 1.5e12)
    task: str = "verifiable_tasks/reversed_addition"
    family: str = "reversed_addition"
    task_share: float = 0.3
    difficulties: tuple[int, ...] = (1, 2, 3)
    problems_per_difficulty: int = 40
    samples: int = 128
    temperature: float = 1.0
    queries: float = 1e6
    bootstrap: int = 0
    task_checkpoints: tuple[float, ...] = (0.25, 0.5, 0.75)
    task_step1: str = "final"
    task_bootstrap: int = 100

    def __post_init__(self):
        super().__post_init__()
        if not self.sizes or not self.budgets or any(not (x > 0) for x in (*self.sizes, *self.budgets)):
            raise ValueError(f"Study: sizes {self.sizes} and budgets {self.budgets} must be positive")
        if not 0 < self.task_share < 1:
            raise ValueError(f"Study.task_share must be in (0, 1), got {self.task_share}")
        if self.samples < 2 or self.problems_per_difficulty < 1 or not self.difficulties:
            raise ValueError("Study: need samples >= 2, problems_per_difficulty >= 1 and difficulties")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"Study.temperature must be positive, got {self.temperature}")
        fr = tuple(self.task_checkpoints)
        if any(not 0 < f < 1 for f in fr) or any(b <= a for a, b in zip(fr, fr[1:])):
            raise ValueError(f"Study.task_checkpoints {fr}: increasing fractions of a run's steps, in (0, 1)")
        if self.task_step1 not in ("final", "all") or self.task_bootstrap < 0:
            raise ValueError(f"Study: task_step1={self.task_step1!r} ('final' or 'all'), task_bootstrap="
                             f"{self.task_bootstrap} (>= 0)")

    def runs(self):
        """Budgets small to large, sizes small to large, then seeds; runs under ``min_steps`` dropped."""
        mixture = (f"{self.task}:{self.task_share}",)
        for budget in sorted(self.budgets):
            for n in sorted(self.sizes):
                for seed in self.seeds:
                    run = self.run(n, budget=budget, seed=seed, data={"mixture": mixture})
                    if run is not None:
                        yield self.keep_checkpoints(run)

    def keep_checkpoints(self, run):
        """The run with ``train.keep_steps`` at ``task_checkpoints`` x its steps (the two-step task
        prediction's intermediate checkpoints; part of the run's config and id)."""
        steps = steps_of(run.config)
        keep = tuple(sorted({s for s in (round(f * steps) for f in self.task_checkpoints) if 1 <= s < steps}))
        if not keep:
            return run
        return dataclasses.replace(run, config=derive(run.config, train={"keep_steps": keep}))

    def measures(self):
        return [counts_stage(self), task_stage(self)]

    def analysis(self):
        return report.analyze_stage


def sweep(study: Study):
    """The study's runs (`Study.runs`)."""
    return study.runs()


def problems(study: Study):
    """The held-out problems every model is sampled on (by hash, the same on every machine)."""
    from experiments.harness import tasks

    return [p for d in study.difficulties
            for p in tasks.held_out_problems(study.family, d, study.problems_per_difficulty)]


def counts_stage(study: Study) -> Measure:
    """counts.csv: one row per (run, problem): n samples, c exact, c_weak weakly accepted."""
    chosen = problems(study)
    by_prompt = {p.prompt: p for p in chosen}

    def measure(run, items):
        from experiments.measures import samples as measure_samples

        for row in measure_samples.iter_sample_counts(
                run.run_dir, [by_prompt[i["problem"]] for i in items], study.samples,
                temperature=study.temperature, run_id=run.run_id, flops_convention="6N"):
            yield row

    return Measure(name="counts", key=("problem",), items=lambda run: [{"problem": p.prompt} for p in chosen],
                   measure=measure)


def task_stage(study: Study) -> Measure:
    """task.csv: one row per (run, checkpoint): the kept steps (``task_checkpoints``) and the final
    one, with tokens seen, the answer NLL (task loss) and the expected pass@1 at the sampling
    temperature (`experiments.measures.task_loss`), on the same held-out problems as counts.csv."""
    chosen = problems(study)

    def steps(run):
        return [*run.run.config.train.keep_steps, steps_of(run.run.config)]

    def measure(run, items):
        from experiments.measures import task_loss

        yield from task_loss.iter_task_losses(run.run_dir, chosen, [int(i["step"]) for i in items],
                                              temperature=study.temperature, run_id=run.run_id)

    return Measure(name="task", key=("step",), items=lambda run: [{"step": s} for s in steps(run)], measure=measure)


# ----------------------------------------------------------------------------- presets


def smoke() -> Study:
    """CI: 2 sizes x 2 budgets of tiny models, 1-2 digit sums, 24 problems x 32 samples."""
    return derive(
        Study(), name="test_time_scaling_smoke", sizes=(1e4, 3e4), budgets=(1e10, 3e10),
        task="verifiable_tasks/small", task_share=0.5, difficulties=(1, 2), problems_per_difficulty=12,
        samples=32, min_steps=20, task_checkpoints=(0.5,),
        task_step1="all", task_bootstrap=20)


def cpu() -> Study:
    return Study()


def gpu() -> Study:
    """One accelerator (estimate, not measured): 1M-30M parameters, seq 256, bf16, 1,000 samples."""
    return derive(
        Study(), name="test_time_scaling_gpu", sizes=(1e6, 3e6, 1e7, 3e7), budgets=(1e15, 3e15, 1e16),
        difficulties=(1, 2, 3, 4), problems_per_difficulty=100, samples=1000, rows_per_step=64,
        base={"model": {"dtype": "bfloat16", "max_seq_len": 256}, "data": {"seq_len": 256}})


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu}
main = command(PRESETS, __doc__)


if __name__ == "__main__":
    cli.run(main)
