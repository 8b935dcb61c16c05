"""Train a dense or MoE language model: ``python -m experiments.train model=moe`` (Hydra 1.3, conf/).

  python -m experiments.train model=dense size=tiny train.max_steps=100
  python -m experiments.train -m model=dense,moe experiment=demo        # jobs one after another
  python -m experiments.train model=moe resume=true                      # continue the same run folder
  python -m experiments.train model=moe overwrite=true                   # replace the run in that folder
  python -m experiments.train model=moe train.max_steps=400 resume=true  # extend a finished 200-step run
  python -m experiments.train -m name=sweep model.shape.top_k=1,2,4      # one folder per job (experiments.sweep)
  python -m experiments.train model=moe logger=tensorboard               # + event files (experiments.loggers)
  torchrun --nproc_per_node=2 -m experiments.train model=moe             # DDP (gloo on CPU, NCCL on GPU)
  torchrun --nproc_per_node=2 -m experiments.train model=moe train.parallel=fsdp   # FSDP2 sharding

This module launches: before Hydra starts, `precheck` composes and validates every job of the command line
(a ``-m`` sweep expanded by Hydra's own basic sweeper, `experiments.sweep.sweep_jobs`) and checks its folder
and memory (`experiments.preflight`); then Hydra runs `run` per job, which trains (`experiments.trainer`)
and turns every expected failure into one line on stderr and an exit status (`experiments.exits`).

Reliability (docs/experiments.md, "Reliability"): one training per folder (an exclusive lock holding the pid,
`experiments.run_folder`); nothing of an old run touched before the new one can proceed; a used folder
needs ``resume=true`` or ``overwrite=true``; resume refuses changed optimiser/schedule/model settings (a
raised ``train.max_steps`` extends the run on the schedule it started with:
`experiments.schedule.schedule_steps`); SIGINT/SIGTERM checkpoint at the step boundary and exit 130/143.
Exit statuses: 0 done, 2 refused, 3 diverged, 4 I/O error, 5 a lost peer rank, 128 + signal.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from . import distributed
from .config import CONF_DIR, ConfigError, RunSpec, compose, config_error, validate
from .exits import EXIT_REFUSED, Interrupted, RunError, error_line, exit_status
from .paths import portable_path
from .preflight import preflight
from .run_folder import RUN_FILES
from .sweep import MAX_NAME_CHARS, sweep_jobs, sweep_tag, swept_keys
from .trainer import train


def precheck(argv: list[str], check_used: bool = False) -> int:
    """Compose and validate EVERY job of the command line before any work starts (a ``-m`` sweep,
    including ``hydra.sweeper.params`` of an experiment file, is expanded by Hydra's basic sweeper);
    raises `ConfigError` with one line. In a sweep, two jobs that would train into one folder
    (`experiments.sweep`: the swept keys name the folders) are refused, and with ``check_used`` (the CLI)
    so is a job whose folder already holds a run unless ``resume=true`` or ``overwrite=true``. Other
    Hydra flags (``--help``, ``--cfg``) skip the check. Returns the number of jobs checked."""
    return len(sweep_plan(argv, check_used))


def sweep_folders(argv: list[str]) -> list[str]:
    """The run folder of every job of a command line (`sweep_plan`), in the order Hydra runs them."""
    return [spec.cfg["run_dir"] for _, spec in sweep_plan(argv)]


def _jobs(args: list[str], multirun: bool) -> tuple[list[list[str]], list[str]]:
    """(the jobs of a command line's overrides, the keys that name a sweep's folders); one job without ``-m``.
    The sweeper's params come from the config composed with each sweep's first value."""
    overrides = OverridesParser.create().parse_overrides(args)  # a malformed override fails here, as in Hydra
    if not multirun:
        return [args], []
    first = [o.input_line if not o.is_sweep_override() else
             f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" for o in overrides]
    params = compose(first, return_hydra=True).hydra.sweeper.get("params") or {}
    return sweep_jobs(args, params), swept_keys(args, params)


def sweep_plan(argv: list[str], check_used: bool = False) -> list[tuple[list[str], RunSpec]]:
    """(overrides, validated spec with its ``run_dir`` as the job will use it) for every job of a command
    line; `precheck` is its check. Empty when Hydra flags other than ``-m`` make it skip."""
    flags = [a for a in argv if a.startswith("-")]
    if any(f not in ("-m", "--multirun") for f in flags):
        return []
    args = [a for a in argv if not a.startswith("-")]
    multirun = bool(flags)
    try:
        jobs, swept = _jobs(args, multirun)
        folders: dict[str, int] = {}
        plan = []
        for i, job in enumerate(jobs, start=1):
            where = f" [job: {' '.join(job)}]" if multirun else ""
            try:
                spec = validate(compose(list(job)))
            except ConfigError as e:
                raise ConfigError(f"{e}{where}") from None
            if multirun:
                spec.cfg["run_dir"] = folder = spec.cfg["run_dir"] + sweep_tag(job, swept)
                _check_sweep_folder(spec, folder, i, where, folders, check_used)
            try:
                preflight(spec)  # before Hydra creates the run folder
            except RunError as e:
                raise RunError(f"{e}{where}") from None
            plan.append((list(job), spec))
    except (HydraException, OmegaConfBaseException) as e:
        raise config_error(e) from None
    return plan


def _check_sweep_folder(spec: RunSpec, folder: str, i: int, where: str, folders: dict[str, int],
                        check_used: bool) -> None:
    """One sweep job's folder: not another job's (`ConfigError` naming both jobs), a name a file system
    takes, and (``check_used``) not an earlier run's unless resume/overwrite (`RunError`)."""
    key = os.path.normpath(os.path.abspath(os.path.expanduser(folder)))
    if key in folders:
        raise ConfigError(f"sweep jobs {folders[key]} and {i} would both train into {folder} (a folder is named "
                          f"by name, model.name, model.size, seed and the swept keys): sweep distinct values{where}")
    folders[key] = i
    if len(Path(folder).name) > MAX_NAME_CHARS:
        raise ConfigError(f"run folder name {Path(folder).name[:60]}... has {len(Path(folder).name)} characters "
                          f"(at most {MAX_NAME_CHARS}): sweep fewer keys at once{where}")
    if check_used and not spec.cfg["resume"] and not spec.cfg["overwrite"]:
        used = [f for f in RUN_FILES if (Path(folder).expanduser() / f).exists()]
        if used:
            raise RunError(f"run folder {folder} already holds a run ({', '.join(used)}): pass resume=true to "
                           f"continue the sweep or overwrite=true to replace it{where}")


def _run_dir_from_hydra(cfg) -> str:
    try:
        return HydraConfig.get().runtime.output_dir
    except Exception:  # not under @hydra.main (compose API)
        return str(cfg.run_dir)


def run(cfg) -> float | None:
    """Validate, then train; every expected failure exits with one line on stderr and its status
    (`EXIT_REFUSED`, `EXIT_DIVERGED`, `EXIT_IO`, 128 + signal); see docs/experiments.md."""
    try:
        spec = validate(cfg)
        run_dir = _run_dir_from_hydra(cfg)
        if os.path.abspath(run_dir) != os.path.abspath(spec.cfg["run_dir"]):  # a -m sweep job's folder
            spec.cfg["run_dir"] = portable_path(run_dir)                      # (experiments.sweep)
        summary = train(spec, run_dir)
    except (Exception, Interrupted) as e:
        status = exit_status(e)
        if status == 1:
            raise
        line = error_line(e)
        if line and (int(os.environ.get("RANK", "0")) == 0 or isinstance(e, OSError)
                     or status == distributed.EXIT_PEER):  # one line per run (a lost peer: per rank)
            print(line.splitlines()[0] if line.strip() else line, file=sys.stderr, flush=True)
        sys.exit(status)
    return (summary or {}).get("final_val_loss")


def _hydra_main():
    try:
        precheck(sys.argv[1:], check_used=True)
    except (ConfigError, RunError) as e:
        print(error_line(e), file=sys.stderr, flush=True)
        sys.exit(EXIT_REFUSED)
    return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(run)()


if __name__ == "__main__":
    _hydra_main()
