"""Sweeps on a cluster: a sweep's runs as jobs of a scheduler, through ``submitit``.

``tralgo sweep SPEC --executor slurm [--slurm-partition P --slurm-time MIN --slurm-cpus N
--slurm-gpus N --slurm-mem-gb G ...]`` submits one Slurm job per run instead of starting local
processes; ``--executor submitit-local`` runs the same jobs through submitit's local executor
(tests, a workstation). Everything else is the local pool's (:class:`sweep.SweepRunner`, which
:class:`ClusterSweepRunner` extends): the same plan and priority order, a finished run is skipped, a
run whose settings changed is moved aside and rerun, ``sweep.json`` records identity and code, a
failed run is recorded in ``sweep_status.json`` with the tail of ``train.log``, and ``--status`` and
``tralgo report`` read the run folders as before.

A job runs ``python -m tralgo train <the run's options> --out <folder> --resume`` (the local
pool's command), so the run-folder rules hold on every node: the trainer takes the folder's lock
(one trainer per folder, even if a run is submitted twice) and resumes from its last checkpoint.

Preemption and time limits: Slurm sends ``USR2`` ``--slurm-signal-delay`` seconds before the
limit, or when it preempts the job; submitit then calls :meth:`TrainJob.checkpoint`, which stops
the trainer (its last per-epoch checkpoint is on disk) and hands submitit the same job to requeue.
The requeued job starts ``tralgo train --resume`` again and continues from that checkpoint, so at
most the epoch in progress is computed twice. Preemptions requeue without limit; time-outs at most
``--slurm-max-requeues`` times (then the run is recorded as failed). submitit tells the two apart
by the job's elapsed time: a signal after 80 % of the limit, or within 10 minutes of it, counts as
a time-out (so with limits of 10 minutes or less every signal does).

``<out>/sweep_events.jsonl`` gets no session or run-end events from cluster sweeps (the report's
table of sweep sessions and worker utilization describes local pools); the report's summed
training time comes from the runs' own metrics as always.

Files: ``<run folder>/cluster_job.json`` names the job that trains the run (a later ``tralgo sweep``
does not submit a run whose job is still queued or running); submitit's pickles and the job's own
stdout/stderr are in ``<out>/submitit/<job id>/``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tralgo.experiments import sweep
from tralgo.experiments.io import atomic_write_json, folder_in_use
from tralgo.experiments.trainer import LOCK_FILE

EXECUTORS = ("local", "slurm", "submitit-local")
JOB_FILE = "cluster_job.json"
SUBMITIT_FOLDER = "submitit"
# A requeued job may start while the previous job's trainer is still being stopped: wait this long
# for the folder lock before concluding that another live trainer holds the run.
LOCK_WAIT_S = 120.0


@dataclass(frozen=True)
class ClusterOptions:
    """Where and with what resources the jobs run."""

    executor: str = "slurm"  # "slurm" or "submitit-local"
    partition: str | None = None
    time_min: int = 24 * 60
    cpus: int = 1
    gpus: int = 0
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    max_requeues: int = 10  # requeues after a time-out (preemptions do not count)
    signal_delay_s: int = 120
    setup: tuple[str, ...] = ()  # shell lines run in the job first (module load, source a venv)
    wait: bool = False  # wait for the jobs (and submit tuned runs when their tuning is done)
    poll_s: float = 10.0  # how often a waiting sweep looks at its jobs (squeue on Slurm)

    def validate(self) -> None:
        if self.executor not in ("slurm", "submitit-local"):
            raise ValueError(f"executor must be slurm or submitit-local, got {self.executor!r}")
        for name in ("time_min", "cpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--slurm-{name.replace('_min', '').replace('_', '-')} must be an integer >= 1, "
                                 f"got {value!r}")
        for name in ("gpus", "max_requeues"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"--slurm-{name.replace('_', '-')} must be an integer >= 0, got {value!r}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise ValueError(f"--slurm-mem-gb must be a number > 0, got {self.mem_gb!r}")
        if not (isinstance(self.signal_delay_s, int) and 0 < self.signal_delay_s < 60 * self.time_min):
            raise ValueError(f"--slurm-signal-delay must be an integer of seconds in (0, {60 * self.time_min}) "
                             f"(less than --slurm-time), got {self.signal_delay_s!r}")
        if not self.poll_s > 0:
            raise ValueError(f"poll interval must be > 0 seconds, got {self.poll_s!r}")

    def make_executor(self, folder: Path):
        """A submitit executor for one job per run, its files in ``folder/<job id>/``."""
        import submitit

        cluster = "slurm" if self.executor == "slurm" else "local"
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster,
                                         **{f"{cluster}_max_num_timeout": self.max_requeues})
        params: dict[str, Any] = {"name": "tralgo-train", "timeout_min": self.time_min,
                                  "cpus_per_task": self.cpus, "nodes": 1, "tasks_per_node": 1}
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if cluster == "slurm":
            params.update(slurm_signal_delay_s=self.signal_delay_s, stderr_to_stdout=True)
            for key in ("partition", "account", "qos", "constraint"):
                if getattr(self, key) is not None:
                    params[f"slurm_{key}"] = getattr(self, key)
            if self.setup:
                params["slurm_setup"] = list(self.setup)
        else:  # the local executor signals 30 s before timeout_min (not settable through AutoExecutor)
            if self.setup:
                params["local_setup"] = list(self.setup)
        executor.update_parameters(**params)
        return executor


# --------------------------------------------------------------------------- the job


def _preempt_signal() -> signal.Signals:
    from submitit.core.job_environment import JobEnvironment

    return JobEnvironment._usr_sig()


def _ignore_preempt_signal() -> None:  # in the trainer process, before exec
    signal.signal(_preempt_signal(), signal.SIG_IGN)


def _iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # submitit is needed only by the cluster executor
    _Checkpointable = object


class TrainJob(_Checkpointable):
    """One run as a scheduler job: ``tralgo train ... --resume`` on its folder, output appended
    to its ``train.log``; returns the trainer's exit code (0 finished, 3 diverged)."""

    def __init__(self, argv: list[str], folder: str, env: dict[str, str]) -> None:
        self.argv, self.folder, self.env = list(argv), str(folder), dict(env)
        self._process: subprocess.Popen | None = None

    def __getstate__(self) -> dict:  # pickled at submission and again at checkpoint()
        return {k: v for k, v in self.__dict__.items() if k != "_process"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._process = None

    def __call__(self) -> int:
        folder = Path(self.folder)
        deadline = time.monotonic() + LOCK_WAIT_S
        while folder_in_use(folder, LOCK_FILE) and time.monotonic() < deadline:
            time.sleep(1.0)  # the trainer of the job this one requeues may still be stopping
        try:
            import submitit

            job_id = submitit.JobEnvironment().job_id
        except Exception:  # run outside a submitit job (tests call it directly)
            job_id = "?"
        with open(folder / "train.log", "a", encoding="utf-8") as log:
            log.write(f"\n# {_iso()} cluster job {job_id} on {os.uname().nodename}: {shlex.join(self.argv)}\n")
            log.flush()
            # The scheduler signals every process of the job; the trainer must not die of the
            # preemption signal before submitit has requeued the job (it is stopped in checkpoint()).
            self._process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env={**os.environ, **self.env},
                                             preexec_fn=_ignore_preempt_signal)
            return self._process.wait()

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on time-out or preemption: stop the trainer so that the requeued
        job can take the folder (the last completed epoch is in its checkpoint) and requeue this
        same job, which resumes from that checkpoint."""
        if self._process is not None:
            _stop(self._process.pid)
        return super().checkpoint(*args, **kwargs)


def _stop(pid: int, grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``, and reap. By pid on purpose: this runs in a signal
    handler that interrupted ``Popen.wait`` in the same thread, which holds the Popen's wait lock
    (``Popen.wait``/``kill`` there would deadlock)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while deadline is None or time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.1)


# --------------------------------------------------------------------------- the submitting side


def _slurm_job_state(job_id: str) -> str | None:
    """The job's state in Slurm's queue (PENDING, RUNNING, REQUEUED, ...), or None when it has
    left the queue. Uses squeue, not sacct: clusters without accounting answer it too."""
    try:
        out = subprocess.run(["squeue", "--noheader", "--format=%T", "--jobs", job_id], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN"  # cannot tell: count it as queued rather than submit a run twice
    if out.returncode != 0:
        # squeue exits 1 with "Invalid job id specified" for a job that left the queue long ago
        return None if "Invalid job id" in out.stderr else "UNKNOWN"
    state = out.stdout.strip().splitlines()
    return state[0].strip() if state else None


def recorded_job(folder: Path) -> dict | None:
    try:
        return json.loads((folder / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def job_is_queued(folder: Path) -> bool:
    """Whether a Slurm job submitted for the run in ``folder`` is still queued or running."""
    job = recorded_job(folder)
    if not job or job.get("executor") != "slurm" or not job.get("job_id"):
        return False
    return _slurm_job_state(str(job["job_id"])) is not None


class _JobHandle:
    """A submitted job seen as a process by the local pool: ``poll()`` is None while it runs,
    then the trainer's exit code (-1 when the job ended without one: an error, cancelled, lost)."""

    pid = None  # no local process: the sweep writes no pid file, the folder lock guards the run

    def __init__(self, job, executor: str) -> None:
        self.job, self.executor = job, executor
        self._gone_polls = 0
        self.error: str | None = None  # why the job ended without the trainer's exit code
        self.returncode: int | None = None

    def _result(self) -> int:
        try:
            result = self.job.result()
        except Exception as e:  # submitit's UncompletedJobError, the job's own exception
            self.error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return -1
        return result if isinstance(result, int) else -1

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._poll()
        return self.returncode

    def _poll(self) -> int | None:
        if self.job.paths.result_pickle.exists():
            return self._result()
        if self.executor == "slurm":
            if _slurm_job_state(str(self.job.job_id)) is not None:
                self._gone_polls = 0
                return None
            # Left the queue without a result (cancelled, node failure): give a shared file
            # system one more poll to show a result written at the very end.
            self._gone_polls += 1
            if self._gone_polls < 2:
                return None
            self.error = f"job {self.job.job_id} left the queue without a result (cancelled or lost)"
            return -1
        return self._result() if self.job.done() else None

    def cancel(self) -> None:
        self.job.cancel(check=False)


class ClusterSweepRunner(sweep.SweepRunner):
    """The local pool (:class:`sweep.SweepRunner`) with scheduler jobs instead of local processes."""

    def __init__(self, spec: dict, out: Path, *, cluster: ClusterOptions, workers: int | None = None,
                 **kwargs: Any) -> None:
        cluster.validate()
        # Slurm queues the jobs itself; submitit's local executor runs every job it is given at
        # once, so there ``workers`` bounds the jobs in flight like the local pool's processes.
        if workers is None:
            workers = sys.maxsize if cluster.executor == "slurm" else 1
        kwargs.setdefault("poll_s", cluster.poll_s if cluster.wait else 0.0)
        super().__init__(spec, out, workers=workers, **kwargs)
        self.cluster = cluster
        self.executor = cluster.make_executor(self.out / SUBMITIT_FOLDER)
        self.submitted: list[str] = []

    def _busy(self, folder: Path) -> bool:
        return super()._busy(folder) or job_is_queued(folder)

    def _event(self, **record) -> None:
        # Session and run-end events measure a local pool (workers x wall time, process run
        # times); a job's time in the queue would count as run time. The report sums the
        # trainers' own wall_s instead; what the sweep did to folders (moved aside) is kept.
        if record.get("event") not in ("session_start", "session_end", "run_end"):
            super()._event(**record)

    def _start(self, run, argv: list[str], log, env: dict[str, str]) -> _JobHandle:
        # A spec's ``threads`` wins; else the trainer uses the CPUs the job asked for (on CPU it
        # would take 1 thread by default).
        if run.options.get("threads") is None:
            argv = [*argv, "--threads", str(self.cluster.cpus)]
        n = str(run.options.get("threads") or self.cluster.cpus)
        threads = {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
        job = self.executor.submit(TrainJob(argv, str(run.folder), threads))
        atomic_write_json(run.folder / JOB_FILE, {
            "executor": self.cluster.executor, "job_id": str(job.job_id), "submitted": _iso(),
            "session": self.session, "submitit_folder": str(job.paths.folder),
        })
        log.write(f"# submitted as {self.cluster.executor} job {job.job_id} (job output: {job.paths.folder})\n")
        log.flush()
        self.submitted.append(str(job.job_id))
        return _JobHandle(job, self.cluster.executor)

    def _detach_all(self) -> None:
        for active in list(self.active):
            self.active.remove(active)
            active.log.close()
            self._release_claim(active.run.folder)  # from here on the job's record says it is queued

    def _reap(self) -> None:
        if not self.cluster.wait:
            self._detach_all()  # submitted is done: the jobs run on without this process
            return
        for active in self.active:
            handle = active.process
            if handle.poll() is not None and handle.error and not getattr(handle, "logged", False):
                # the local pool records the log's tail as the failure: put the job's reason there
                active.log.write(f"# cluster job: {handle.error}\n")
                active.log.flush()
                handle.logged = True
        super()._reap()

    def _terminate_all(self) -> None:
        if self.cluster.executor == "slurm":
            self._detach_all()  # Ctrl-C stops the waiting, not the cluster's work: jobs stay queued
            return
        for active in self.active:
            active.process.cancel()
        deadline = time.monotonic() + 60
        while any(a.process.poll() is None for a in self.active) and time.monotonic() < deadline:
            time.sleep(0.5)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``tralgo sweep``'s executor options."""
    group = parser.add_argument_group("cluster executor (see docs/harness.md)")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: a pool of --workers processes (default); slurm: one Slurm job per run "
                            "through submitit, requeued on preemption/time-out and resumed from the run's "
                            "checkpoint; submitit-local: the same jobs on this machine (tests)")
    group.add_argument("--slurm-partition", help="partition (sbatch --partition)")
    group.add_argument("--slurm-time", type=int, default=24 * 60, metavar="MIN",
                       help="time limit of a job in minutes; a run that needs longer is requeued and resumes "
                            "(default 1440)")
    group.add_argument("--slurm-cpus", type=int, default=1, help="CPUs per job (default 1)")
    group.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per job (default 0)")
    group.add_argument("--slurm-mem-gb", type=float, default=None, help="memory per job in GB (default: the "
                       "partition's)")
    group.add_argument("--slurm-account", help="account to charge (sbatch --account)")
    group.add_argument("--slurm-qos", help="quality of service (sbatch --qos)")
    group.add_argument("--slurm-constraint", help="node features (sbatch --constraint)")
    group.add_argument("--slurm-max-requeues", type=int, default=10,
                       help="requeues after a time-out before the run counts as failed: a run needing T hours "
                            "under a limit of L hours needs T/L (preemptions requeue without limit; default 10)")
    group.add_argument("--slurm-signal-delay", type=int, default=120, metavar="S",
                       help="seconds before the time limit at which the job is stopped and requeued (default 120)")
    group.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                       help="shell line run in each job before training, e.g. 'source .venv/bin/activate' "
                            "(repeatable)")
    group.add_argument("--wait", action="store_true",
                       help="slurm: wait for the jobs, report each end, and submit tuned runs once their "
                            "tuning runs are done (default: submit what can run now and exit; run the same "
                            "command again later to submit the rest)")


def options_from_args(args: argparse.Namespace) -> ClusterOptions:
    options = ClusterOptions(
        executor=args.executor, partition=args.slurm_partition, time_min=args.slurm_time, cpus=args.slurm_cpus,
        gpus=args.slurm_gpus, mem_gb=args.slurm_mem_gb, account=args.slurm_account, qos=args.slurm_qos,
        constraint=args.slurm_constraint, max_requeues=args.slurm_max_requeues,
        signal_delay_s=args.slurm_signal_delay, setup=tuple(args.slurm_setup),
        wait=args.wait or args.executor == "submitit-local",
        poll_s=10.0 if args.executor == "slurm" else 1.0,  # local jobs are cheap to look at
    )
    options.validate()
    if options.executor == "slurm" and shutil.which("sbatch") is None:
        raise ValueError("--executor slurm needs Slurm's sbatch on PATH (run tralgo sweep on a login node)")
    return options
