"""The cluster executor: a sweep's runs as submitit jobs, requeued on preemption and resumed.

Two schedulers: submitit's local executor (always), and a real single-node Slurm started by the
``slurm`` fixture below (Debian's slurmctld + slurmd + munge, private config, ports and munge
socket; skipped where those are not installed or the tests do not run as root).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tralgo.experiments import cluster, sweep
from tralgo.experiments.io import read_jsonl

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


def write_learnable_idx(folder: Path, n_train: int, n_test: int) -> None:
    """Fashion-MNIST-shaped IDX files whose class is a bright band's position (learnable)."""
    import struct

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for (images_stem, labels_stem), n in ((IDX_STEMS[:2], n_train), (IDX_STEMS[2:], n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 96, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label + 4: 2 * label + 6, :] = 255
        for stem, array in ((images_stem, images), (labels_stem, labels)):
            header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            (folder / stem).write_bytes(header + array.tobytes())


def write_spec(tmp_path: Path, *, seeds, epochs: int, n_train: int = 64) -> Path:
    data = tmp_path / "data"
    if not data.exists():
        write_learnable_idx(data, n_train=n_train, n_test=32)
    spec = tmp_path / "spec.toml"
    spec.write_text(textwrap.dedent(f"""
        name = "c"
        [defaults]
        dataset = "fashion-mnist"
        data_dir = "{data}"
        model = "cnn"
        width = 0.25
        epochs = {epochs}
        batch_size = 8
        eval_batch_size = 64
        threads = 1
        device = "cpu"

        [[study]]
        name = "s"
        [study.grid]
        seed = {list(seeds)}
        [[study.variant]]
        name = "trsgd"
        optimizer = "trsgd"
        lr = 0.05
    """))
    return spec


def run_folders(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.rglob("sweep.json"))


def status(folder: Path) -> str | None:
    try:
        return json.loads((folder / "result.json").read_text())["status"]
    except FileNotFoundError:
        return None


def epochs_logged(folder: Path) -> list[int]:
    return [r["epoch"] for r in read_jsonl(folder / "metrics.jsonl")]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ------------------------------------------------------------------------------------------
# Options
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--slurm-time", "0"], "--slurm-time must be an integer >= 1, got 0"),
    (["--slurm-gpus", "-1"], "--slurm-gpus must be an integer >= 0, got -1"),
    (["--slurm-mem-gb", "0"], "--slurm-mem-gb must be a number > 0"),
    (["--slurm-time", "1", "--slurm-signal-delay", "90"], r"--slurm-signal-delay must be .* \(0, 60\)"),
])
def test_bad_resource_options_are_one_line_errors(tmp_path, capsys, argv, message):
    spec = write_spec(tmp_path, seeds=[1], epochs=1)
    code = sweep.main([str(spec), "--out", str(tmp_path / "out"), "--executor", "submitit-local", "--allow-dirty",
                       *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    import re
    assert re.search(message, err), err
    assert not (tmp_path / "out" / "s").exists()  # nothing submitted


def test_slurm_resources_reach_sbatch(tmp_path):
    options = cluster.ClusterOptions(executor="slurm", partition="gpu", time_min=90, cpus=4, gpus=1, mem_gb=16,
                                     account="proj", qos="high", constraint="a100", signal_delay_s=120,
                                     setup=("source .venv/bin/activate",))
    executor = options.make_executor(tmp_path)
    script = executor._executor._make_submission_file_text("python -m submitit.core._submit", "%j")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --mem=16GB", "#SBATCH --account=proj", "#SBATCH --qos=high",
                 "#SBATCH --constraint=a100", "#SBATCH --signal=USR2@120", "source .venv/bin/activate"):
        assert line in script, line


@pytest.mark.parametrize("spec_threads, expected", [(None, "4"), (2, "2")])
def test_the_trainer_uses_the_jobs_cpus_unless_the_spec_sets_threads(tmp_path, spec_threads, expected):
    import types

    spec = write_spec(tmp_path, seeds=[1], epochs=1)
    text = spec.read_text().replace("threads = 1", "" if spec_threads is None else f"threads = {spec_threads}")
    spec.write_text(text)
    runner = cluster.ClusterSweepRunner(sweep.load_spec(spec), tmp_path / "out", argv=["test"],
                                        cluster=cluster.ClusterOptions(executor="submitit-local", cpus=4, wait=True),
                                        code={"git_commit": None, "allow_dirty": True})
    submitted = []
    fake_job = types.SimpleNamespace(job_id="7", paths=types.SimpleNamespace(folder=tmp_path / "job"))
    runner.executor = types.SimpleNamespace(submit=lambda job: submitted.append(job) or fake_job)
    runner._launch(runner._next_run())
    (job,) = submitted
    flags = [(a, b) for a, b in zip(job.argv, job.argv[1:]) if a == "--threads"]
    assert flags == [("--threads", expected)], job.argv
    assert job.env == {"OMP_NUM_THREADS": expected, "MKL_NUM_THREADS": expected}


# ------------------------------------------------------------------------------------------
# submitit's local executor
# ------------------------------------------------------------------------------------------

@pytest.mark.slow  # two submitit jobs, each a python + a tralgo train process
def test_local_executor_runs_the_sweep_and_a_second_call_skips_it(tmp_path, capsys):
    spec = write_spec(tmp_path, seeds=[1, 2], epochs=2)
    out = tmp_path / "out"
    argv = [str(spec), "--out", str(out), "--executor", "submitit-local", "--workers", "2", "--allow-dirty"]
    assert sweep.main(argv) == 0
    said = capsys.readouterr().out
    assert "submitted 2 submitit-local job(s)" in said and "2 finished, 0 diverged, 0 failed" in said, said
    folders = run_folders(out)
    assert len(folders) == 2
    for folder in folders:
        assert status(folder) == "finished" and epochs_logged(folder) == [1, 2]
        job = json.loads((folder / cluster.JOB_FILE).read_text())
        assert job["executor"] == "submitit-local" and Path(job["submitit_folder"]).is_dir()
        assert "cluster job" in (folder / "train.log").read_text()
    events = list(read_jsonl(out / sweep.EVENTS_FILE)) if (out / sweep.EVENTS_FILE).exists() else []
    assert not [e for e in events if e.get("event") in ("session_start", "run_end")]  # local pools only
    assert sweep.main(argv) == 0  # everything finished: nothing is submitted again
    assert "submitted 0 submitit-local job(s)" in capsys.readouterr().out
    assert sweep.main([str(spec), "--out", str(out), "--status"]) == 0
    assert "finished 2" in capsys.readouterr().out


@pytest.mark.slow  # a submitit job and a tralgo train process
def test_local_executor_records_a_failed_run_with_the_log_tail(tmp_path, capsys):
    spec = write_spec(tmp_path, seeds=[1], epochs=1)
    spec.write_text(spec.read_text().replace('data_dir = "', 'data_dir = "/nonexistent'))
    out = tmp_path / "out"
    assert sweep.main([str(spec), "--out", str(out), "--executor", "submitit-local", "--allow-dirty"]) == 1
    (folder,) = [p.parent for p in out.rglob("sweep.json")]
    recorded = json.loads((folder / sweep.STATUS_FILE).read_text())
    assert recorded["status"] == "failed" and recorded["returncode"] == 1
    assert "dataset 'fashion-mnist' not found" in recorded["error"]


def descendants(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [d for child in children for d in (child, *descendants(child))]


@pytest.mark.slow  # a job run twice, 8 short epochs
def test_preempted_job_is_requeued_and_resumes_from_the_checkpoint(tmp_path):
    spec = write_spec(tmp_path, seeds=[1], epochs=8, n_train=800)
    out = tmp_path / "out"
    runner = cluster.ClusterSweepRunner(sweep.load_spec(spec), out, workers=1, argv=["test"],
                                        cluster=cluster.ClusterOptions(executor="submitit-local", wait=True,
                                                                       poll_s=0.2),
                                        code={"git_commit": None, "allow_dirty": True})
    summary = {}
    thread = threading.Thread(target=lambda: summary.update(runner.run()))
    thread.start()
    try:
        folder = out / "s" / "trsgd" / "seed-1"
        # after the first checkpoint (a signal during the metrics line / checkpoint write would
        # restart the run from scratch, correctly, but then there is no resume to check)
        wait_for(lambda: (folder / "checkpoint.pt").exists(), 300, "the first checkpoint")
        (active,) = runner.active
        # The preemption signal to every process of the job (the job's python and the trainer),
        # as Slurm sends it; submitit's own LocalJob._interrupt() signals only its controller.
        controller = active.process.job._process.pid
        for pid in descendants(controller):
            os.kill(pid, cluster._preempt_signal())
    finally:
        thread.join(600)
    assert summary["finished"] == 1 and summary["failed"] == 0, summary
    assert status(folder) == "finished"
    assert epochs_logged(folder) == list(range(1, 9))  # every epoch once: nothing duplicated or lost
    log = (folder / "train.log").read_text()
    assert log.count("cluster job") == 2, log  # requeued once
    assert "resuming after epoch" in log, log


# ------------------------------------------------------------------------------------------
# A real single-node Slurm
# ------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def slurm(tmp_path_factory, monkeypatch):
    """slurmctld + slurmd + munged of their own (config, state, ports, munge key and socket in a
    temporary folder), stopped afterwards. Needs root and Debian's slurmctld, slurmd, slurm-client,
    munge packages."""
    needed = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "munged", "mungekey")
    missing = [b for b in needed if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]
    if missing:
        pytest.skip(f"Slurm/munge not installed ({', '.join(missing)}); apt-get install slurmctld slurmd "
                    "slurm-client munge")
    if os.geteuid() != 0:
        pytest.skip("the single-node Slurm of this test runs its daemons as root")
    root = tmp_path_factory.mktemp("slurm")
    root.chmod(0o700)
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    sbin = lambda name: shutil.which(name) or f"/usr/sbin/{name}"  # noqa: E731
    key, sock = root / "munge.key", root / "munge.socket"
    subprocess.run([sbin("mungekey"), "--create", "--keyfile", str(key)], check=True, capture_output=True)
    key.chmod(0o600)
    host = socket.gethostname()
    conf = root / "slurm.conf"
    conf.write_text(textwrap.dedent(f"""
        ClusterName=tralgo-test
        SlurmctldHost={host}(127.0.0.1)
        SlurmUser=root
        SlurmdUser=root
        AuthType=auth/munge
        CredType=cred/munge
        AuthInfo=socket={sock}
        StateSaveLocation={root}/state
        SlurmdSpoolDir={root}/spool
        SlurmctldPidFile={root}/slurmctld.pid
        SlurmdPidFile={root}/slurmd.pid
        SlurmctldLogFile={root}/log/slurmctld.log
        SlurmdLogFile={root}/log/slurmd.log
        SlurmctldPort={_free_port()}
        SlurmdPort={_free_port()}
        ProctrackType=proctrack/linuxproc
        TaskPlugin=task/none
        JobAcctGatherType=jobacct_gather/none
        AccountingStorageType=accounting_storage/none
        SchedulerType=sched/backfill
        SelectType=select/cons_tres
        SelectTypeParameters=CR_Core
        ReturnToService=2
        MpiDefault=none
        JobRequeue=1
        KillWait=5
        InactiveLimit=0
        MinJobAge=300
        SchedulerParameters=sched_interval=1
        NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=1000 State=UNKNOWN
        PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
    """))
    (root / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\nCgroupAutomount=no\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    started = []
    try:
        munged = subprocess.run([sbin("munged"), "--force", "--socket", str(sock), "--key-file", str(key),
                                 "--pid-file", str(root / "munged.pid"), "--log-file", str(root / "log" / "munged.log"),
                                 "--seed-file", str(root / "munged.seed")], capture_output=True, text=True)
        assert munged.returncode == 0, munged.stderr
        started.append(root / "munged.pid")
        for daemon in ("slurmctld", "slurmd"):
            result = subprocess.run([sbin(daemon)] + (["-i"] if daemon == "slurmctld" else []), capture_output=True,
                                    text=True, env={**os.environ, "SLURM_CONF": str(conf)})
            assert result.returncode == 0, (daemon, result.stderr)
            started.append(root / f"{daemon}.pid")
        wait_for(lambda: subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True,
                                        text=True).stdout.strip() == "idle", 60, "the Slurm node to be idle", 0.5)
        yield root
    finally:
        for pid_file in reversed(started):
            try:
                os.kill(int(pid_file.read_text().strip()), 15)
            except (OSError, ValueError):
                pass


@pytest.mark.slow  # Slurm daemons and 4 jobs: ~80 s on the loaded 2-core machine
def test_slurm_runs_the_sweep_and_requeues_a_preempted_job(slurm, tmp_path, capsys):
    spec = write_spec(tmp_path, seeds=[1, 2], epochs=2)
    out = tmp_path / "out"
    argv = [str(spec), "--out", str(out), "--executor", "slurm", "--slurm-time", "10", "--slurm-signal-delay", "60",
            "--allow-dirty"]
    assert sweep.main([*argv, "--wait"]) == 0
    said = capsys.readouterr().out
    assert "submitted 2 slurm job(s)" in said and "2 finished, 0 diverged, 0 failed" in said, said
    assert all(status(f) == "finished" and epochs_logged(f) == [1, 2] for f in run_folders(out))
    assert sweep.main(argv) == 0 and "submitted 0 slurm job(s)" in capsys.readouterr().out

    # Preemption: submit without waiting, let the run write its first epoch, then send the
    # scheduler's preemption signal; submitit requeues the job and it resumes from the checkpoint.
    spec = write_spec(tmp_path / "long", seeds=[3], epochs=8, n_train=800)
    out = tmp_path / "long" / "out"
    assert sweep.main([str(spec), "--out", str(out), "--executor", "slurm", "--slurm-time", "10",
                       "--slurm-signal-delay", "60", "--allow-dirty"]) == 0
    assert "the jobs run on without this command" in capsys.readouterr().out
    folder = out / "s" / "trsgd" / "seed-3"
    job_id = json.loads((folder / cluster.JOB_FILE).read_text())["job_id"]
    assert cluster.job_is_queued(folder)
    # a second sweep does not submit the queued run again
    assert sweep.main([str(spec), "--out", str(out), "--executor", "slurm", "--allow-dirty"]) == 0
    assert "submitted 0 slurm job(s)" in capsys.readouterr().out
    wait_for(lambda: (folder / "checkpoint.pt").exists(), 300, "the first checkpoint")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    wait_for(lambda: cluster._slurm_job_state(job_id) == "PENDING", 120, "the job to be requeued", 0.5)
    # Slurm holds a requeued job back for a while (BeginTime); a test need not wait for that.
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
    wait_for(lambda: status(folder), 600, "the requeued job to finish the run", 1.0)
    assert status(folder) == "finished" and epochs_logged(folder) == list(range(1, 9))
    log = (folder / "train.log").read_text()
    assert log.count("cluster job") == 2 and "resuming after epoch" in log, log
    wait_for(lambda: not cluster.job_is_queued(folder), 60, "the job to leave the queue", 1.0)
