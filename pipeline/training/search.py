"""Hyperparameter search for CLSTM-PPO with Optuna, on the saved training dataset of one trading day.

Each trial trains CLSTM-PPO in-process on the dataset's train part (`SEARCH_SPACE` on top of a preset, one torch
thread) and is scored by the **selection Sharpe after costs**: the deterministic policy walks every
(selection day, symbol) once in the intraday env's evaluation mode (`run_intraday`), and `compute_metrics`
turns its daily net returns into the annualized Sharpe (sqrt(252)), the same figure the backtest assets report; a
policy that never trades scores 0. The same Sharpe, measured every `report_every` PPO updates, is reported to the
pruner (median rule by default), so trials that trail the others at the same update stop early. Only the train
and selection parts are loaded: the search is a choice, and the gate's days are not its to read.

The study lives in an Optuna RDB storage (a SQLite file by default, PostgreSQL by URL): running again adds trials
to the same study, and `workers` processes (`python -m pipeline.training.search --spec ... --trials N`) run trials
of one study at once. Framework-free: the Dagster asset in assets/search.py wraps it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import optuna
import pydantic
import sqlalchemy
import torch

from pipeline.agents import checkpoints as ckpt
from pipeline.agents.clstm_ppo import CLSTMPPO
from pipeline.agents.ppo_update import TrainingDivergedError
from pipeline.backtest.metrics import compute_metrics
from pipeline.backtest.runner import run_intraday
from pipeline.envs.intraday import IntradayConfig
from pipeline.envs.tensors import MarketTensors
from pipeline.training.curves import markdown_image
from pipeline.training.dataset import load_dataset
from pipeline.training.env_factories import NUM_ENVS
from pipeline.training.run import DEFAULT_INTRADAY, DatasetData, TrainingRun

SQLITE_TIMEOUT_S = 120.0
"""How long a SQLite writer waits for the file lock: workers of one study write trials at the same time."""
ENV_PARAMS = ("window", "reward_scale")
"""Searched parameters that belong to the intraday env (IntradayConfig), not to PPOConfig: the trading envs' obs
windows are their own (PPOConfig.window only applies to 1-D observations)."""


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: a float range (log-uniform when `log`), an int range, or categorical `choices`."""

    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        kind = "int" if self.integer else ("log-uniform" if self.log else "uniform")
        return f"{kind} [{self.low:g}, {self.high:g}]"


SEARCH_SPACE: dict[str, Dimension] = {
    "actor_lr": Dimension(1e-5, 1e-3, log=True),
    "critic_lr": Dimension(1e-4, 3e-3, log=True),
    "clip_eps": Dimension(0.05, 0.3),
    # The entropy schedule: linear from start to end; end may exceed start (a rising bonus), the sampler decides.
    "ent_coef_start": Dimension(1e-3, 1e-1, log=True),
    "ent_coef_end": Dimension(1e-4, 1e-1, log=True),
    "hidden": Dimension(choices=(16, 32, 64, 128)),
    "policy_epochs": Dimension(1, 8, integer=True),
    "extra_critic_epochs": Dimension(0, 8, integer=True),
    "window": Dimension(choices=(4, 8, 16, 32)),
    "reward_scale": Dimension(1e-3, 1e-1, log=True),
}
"""What the search varies, by the name of the field it sets: PPOConfig fields, and the IntradayConfig fields in
ENV_PARAMS. Everything else comes from the spec's preset and env config."""


STORAGE_VAR = "PIPELINE_OPTUNA_STORAGE"
"""Environment variable holding the storage URL of runs that do not set one (the place for a password)."""


@dataclass(frozen=True)
class SearchSpec:
    """One study: where its data and storage are, and what each trial trains with (JSON-able, for the workers)."""

    dataset_dir: str
    """A folder written by `save_dataset`: trials train on its train part and are scored on its selection part."""
    study_name: str
    storage: str = dataclasses.field(repr=False)
    """SQLAlchemy URL of the Optuna storage: sqlite:///path/studies.db or postgresql://user:pass@host/db (kept
    out of the repr: it may hold a password)."""
    steps_per_trial: int = 65_536
    """Env steps each trial trains for (pruned trials stop earlier)."""
    preset: str | None = None
    """PPOConfig preset under the searched fields; unset: the one for a trial's budget (`preset_for_budget`)."""
    env: IntradayConfig = DEFAULT_INTRADAY
    """The training and selection envs' settings under the searched ones (ENV_PARAMS)."""
    num_envs: int = NUM_ENVS // 4
    """Parallel training episodes per trial: a quarter of a full run's (trials are short and many)."""
    report_every: int = 5
    """PPO updates between two selection Sharpes reported to the pruner."""
    seed: int = 0
    """Training seed of every trial (trials differ by their parameters only) and base seed of the sampler."""
    device: str = "cpu"
    pruner_startup_trials: int = 3
    """The median pruner prunes nothing until this many trials have finished."""
    pruner_warmup_reports: int = 1
    """Reports of a trial before the median pruner may stop it."""

    def to_json(self) -> str:
        return pydantic.TypeAdapter(SearchSpec).dump_json(self, indent=2).decode()

    @classmethod
    def from_json(cls, text: str) -> SearchSpec:
        return pydantic.TypeAdapter(SearchSpec).validate_json(text)

    def trial_run(self, hparams: Mapping[str, Any], env_params: Mapping[str, Any]) -> TrainingRun:
        """The TrainingRun of a trial with these searched values (no selection walk: the search scores it)."""
        return TrainingRun.build(DatasetData(self.dataset_dir), total_timesteps=self.steps_per_trial, seed=self.seed,
                                 device=self.device, preset=self.preset, agent={**hparams, "torch_threads": 1},
                                 env=dataclasses.replace(self.env, **env_params), num_envs=self.num_envs,
                                 selection_envs=0)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The Optuna storage at `url`; a SQLite file gets its folder and a long lock timeout (concurrent workers)."""
    parsed = sqlalchemy.engine.make_url(url)
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def study_storage(configured: str | None, default: str, environ: Mapping[str, str] | None = None) -> str:
    """The study's storage URL: the run config's, else PIPELINE_OPTUNA_STORAGE, else `default`.

    Dagster keeps run configs in plain text in the run history, so a URL given there may not carry a password.
    """
    if configured:
        if sqlalchemy.engine.make_url(configured).password is not None:
            raise ValueError(
                f"the Optuna storage URL in the run config ({shown_url(configured)}) carries a password, and run "
                f"configs are kept in plain text in Dagster's run history: leave `storage` unset and export "
                f"{STORAGE_VAR}=<url> where the run executes"
            )
        return configured
    env = os.environ if environ is None else environ
    return env.get(STORAGE_VAR) or default


def shown_url(url: str) -> str:
    """`url` with any password masked, for logs and metadata."""
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


def median_pruner(spec: SearchSpec) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials,
                                       n_warmup_steps=spec.pruner_warmup_reports * spec.report_every)


def open_study(spec: SearchSpec, worker: int = 0, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study, or load it if it exists. The sampler's seed mixes the spec seed, the worker and the
    trials already there, so a re-run or a second worker does not draw the first run's points again."""
    storage = open_storage(spec.storage)
    existing = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    done = len(optuna.load_study(study_name=spec.study_name, storage=storage).trials) \
        if spec.study_name in existing else 0
    sampler = optuna.samplers.TPESampler(seed=spec.seed + 1000 * worker + 1_000_003 * done)
    return optuna.create_study(storage=storage, study_name=spec.study_name, direction="maximize",
                               sampler=sampler, pruner=pruner or median_pruner(spec), load_if_exists=True)


def suggest(trial: optuna.Trial) -> tuple[dict[str, Any], dict[str, Any]]:
    """(PPOConfig fields, IntradayConfig fields) of one trial, drawn from SEARCH_SPACE."""
    values = {name: dim.suggest(trial, name) for name, dim in SEARCH_SPACE.items()}
    env = {k: v for k, v in values.items() if k in ENV_PARAMS}
    return {k: v for k, v in values.items() if k not in ENV_PARAMS}, env


def selection_metrics(agent: CLSTMPPO, market: MarketTensors, env_config: IntradayConfig) -> dict[str, float]:
    """`compute_metrics` of the deterministic policy's walk over the selection market (net of costs). Every RNG
    is put back, so a trial trains the same whether or how often it is scored."""
    rng_tensors, rng_meta = ckpt.rng_to_flat()
    try:
        returns = run_intraday(market, agent, "clstm_ppo", env_config=env_config, seed=0)
    finally:
        ckpt.rng_from_flat(rng_tensors, rng_meta)
    return compute_metrics(returns)


def selection_score(metrics: Mapping[str, float]) -> float:
    """The trial's score: the selection Sharpe, 0 where it is undefined (a policy that never trades)."""
    sharpe = metrics["sharpe"]
    return sharpe if math.isfinite(sharpe) else 0.0


def objective(spec: SearchSpec, worker: int = 0) -> Callable[[optuna.Trial], float]:
    """The trial function: train on the train part, report the selection Sharpe every `report_every` updates
    (raising TrialPruned when the pruner says so), return the final policy's selection Sharpe."""

    def run_trial(trial: optuna.Trial) -> float:
        run = spec.trial_run(*suggest(trial))
        selection = load_dataset(spec.dataset_dir, spec.device, parts=("selection",)).part("selection")
        env_config = run.env
        agent = CLSTMPPO(run.train_env(), run.agent_config())
        trial.set_user_attr("worker", worker)
        scored: dict[int, dict[str, float]] = {}  # update -> selection metrics of the policy after it

        def on_update(row: dict[str, Any]) -> None:
            if row["update"] % spec.report_every:
                return
            scored[row["update"]] = selection_metrics(agent, selection, env_config)
            sharpe = selection_score(scored[row["update"]])
            trial.report(sharpe, step=row["update"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"selection Sharpe {sharpe:.3g} at update {row['update']}")

        agent.learn(spec.steps_per_trial, callback=on_update)
        # The last update's report already scored the final policy when it fell on a reporting update.
        metrics = scored.get(agent.num_updates) or selection_metrics(agent, selection, env_config)
        trial.set_user_attr("selection", {k: v for k, v in metrics.items() if math.isfinite(v)})
        trial.set_user_attr("updates", agent.num_updates)
        return selection_score(metrics)

    return run_trial


def run_trials(spec: SearchSpec, n_trials: int, worker: int = 0,
               pruner: optuna.pruners.BasePruner | None = None) -> None:
    """Run `n_trials` trials of the study in this process; a diverged trial is recorded as failed and the search
    goes on."""
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(spec, worker, pruner)
    study.optimize(objective(spec, worker), n_trials=n_trials, catch=(TrainingDivergedError,))


def worker_command(spec_path: str | Path, n_trials: int, worker: int) -> list[str]:
    return [sys.executable, "-m", "pipeline.training.search", "--spec", str(spec_path),
            "--trials", str(n_trials), "--worker", str(worker)]


def run_study(spec: SearchSpec, n_trials: int, workers: int = 1,
              pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Add `n_trials` trials to the study, split over `workers` processes (1: in this process), and return it.
    `pruner` (in-process only) replaces the median pruner; worker processes build theirs from the spec."""
    if n_trials < 1 or workers < 1:
        raise ValueError(f"n_trials and workers must be >= 1; got n_trials={n_trials}, workers={workers}")
    if workers > 1 and pruner is not None:
        raise ValueError("a custom pruner runs in this process only; use workers=1, or the spec's median pruner")
    open_study(spec)  # create it once, before workers race to
    if workers == 1:
        run_trials(spec, n_trials, pruner=pruner)
    else:
        shares = [n_trials // workers + (i < n_trials % workers) for i in range(workers)]
        with tempfile.TemporaryDirectory() as tmp:
            spec_path = Path(tmp) / "spec.json"
            spec_path.write_text(spec.to_json())
            env = os.environ | {"OMP_NUM_THREADS": "1"}
            procs = [subprocess.Popen(worker_command(spec_path, share, i), env=env)
                     for i, share in enumerate(shares) if share]
            codes = [p.wait() for p in procs]
        if any(codes):
            raise RuntimeError(f"search workers exited with {codes}; their errors are in the run's stderr")
    return optuna.load_study(study_name=spec.study_name, storage=open_storage(spec.storage))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def trials_markdown(study: optuna.Study) -> str:
    """A markdown table of every trial: number, state, value, then one column per searched parameter."""
    names = [n for n in SEARCH_SPACE if any(n in t.params for t in study.trials)]
    lines = ["| trial | state | selection Sharpe | " + " | ".join(names) + " |",
             "|" + "---|" * (3 + len(names))]
    for t in study.trials:
        cells = [str(t.number), t.state.name, _cell(t.value), *(_cell(t.params.get(n)) for n in names)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_params(study: optuna.Study, spec: SearchSpec) -> dict[str, Any]:
    """A summary of the best trial: its score, its searched values (PPOConfig and env fields) and the preset they
    sit on. Its whole run is `best_run`."""
    best = study.best_trial
    return {
        "study": spec.study_name,
        "storage": shown_url(spec.storage),
        "trial": best.number,
        "selection_sharpe": best.value,
        "preset": best_run(study, spec).preset,
        "steps_per_trial": spec.steps_per_trial,
        "hparams": {k: v for k, v in best.params.items() if k not in ENV_PARAMS},
        "env": {k: v for k, v in best.params.items() if k in ENV_PARAMS},
    }


def best_run(study: optuna.Study, spec: SearchSpec) -> TrainingRun:
    """The TrainingRun of the best trial: what the training asset takes (`searched_run`), its agent and env."""
    params = study.best_trial.params
    return spec.trial_run({k: v for k, v in params.items() if k not in ENV_PARAMS},
                          {k: v for k, v in params.items() if k in ENV_PARAMS})


def parameter_importance(study: optuna.Study) -> dict[str, float] | None:
    """fANOVA importance of each parameter for the selection Sharpe; None with fewer than two finished trials
    of different values (nothing to explain yet)."""
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(finished) < 2 or len({t.value for t in finished}) < 2:
        return None
    return optuna.importance.get_param_importances(study)


def svg_bar_chart(values: Mapping[str, float], title: str) -> str:
    """Horizontal bars, one per name, longest on top, scaled to the largest value."""
    rows = sorted(values.items(), key=lambda kv: -kv[1])
    width, bar_h, left, top = 640, 22, 160, 30
    height = top + bar_h * len(rows) + 20
    top_value = max((v for _, v in rows), default=0.0) or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>']
    for i, (name, value) in enumerate(rows):
        y = top + i * bar_h
        length = max(0.0, value) / top_value * (width - left - 70)
        parts.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(name)}</text>'
                     f'<rect x="{left}" y="{y + 4}" width="{length:.1f}" height="{bar_h - 8}" fill="#1f77b4"/>'
                     f'<text x="{left + length + 4:.1f}" y="{y + 15}">{value:.3f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def importance_markdown(study: optuna.Study) -> str:
    """The importance plot as markdown (inline SVG), or a line saying why there is none yet."""
    importance = parameter_importance(study)
    if importance is None:
        return "Parameter importance needs at least two completed trials with different selection Sharpes."
    svg = svg_bar_chart(importance, "parameter importance for the selection Sharpe (fANOVA)")
    return markdown_image(svg, "parameter importance")


def space_markdown() -> str:
    """The search space as a markdown table (what each trial draws from)."""
    rows = [f"| {name} | {'IntradayConfig' if name in ENV_PARAMS else 'PPOConfig'} | {dim.describe()} |"
            for name, dim in SEARCH_SPACE.items()]
    return "\n".join(["| parameter | of | range |", "|---|---|---|", *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run trials of one CLSTM-PPO study (a search worker).")
    parser.add_argument("--spec", required=True, help="path to a SearchSpec JSON")
    parser.add_argument("--trials", type=int, required=True, help="trials this worker runs")
    parser.add_argument("--worker", type=int, default=0, help="worker index (varies the sampler's seed)")
    args = parser.parse_args(argv)
    run_trials(SearchSpec.from_json(Path(args.spec).read_text()), args.trials, args.worker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
