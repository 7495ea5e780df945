import json
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tralgo.experiments import sweep

FAKE_TRAIN = r'''
"""A stand-in for ``tralgo train`` that honours the run-folder contract in milliseconds.

lr 999 -> crashes (exit 1); lr 666 -> diverges (exit 3); val_acc = 1 - |lr - 0.05| so tuning
has a known best lr. Each start appends a line to starts.log (to check skip/resume).
"""
import argparse
import json
import sys
from pathlib import Path



def atomic_write_json(path, obj):  # plain writes: importing tralgo would import torch (slow)
    path.write_text(json.dumps(obj))


def append_jsonl(path, rec):
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--resume", action="store_true")
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--val-split", type=int, default=0)
args, rest = p.parse_known_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
with open(out / "starts.log", "a") as f:
    f.write(json.dumps({"resume": args.resume, "argv": sys.argv[1:]}) + "\n")
config = {"lr": args.lr, "seed": args.seed, "epochs": args.epochs, "val_split": args.val_split, "argv": rest}
atomic_write_json(out / "config.json", config)
if args.lr == 999:
    print("Traceback: boom: simulated crash", file=sys.stderr)
    sys.exit(1)
for epoch in range(1, args.epochs + 1):
    acc = 0.5 + 0.01 * args.seed + 0.1 * epoch
    rec = {"epoch": epoch, "train_loss": 1.0 / epoch, "train_acc": acc, "test_loss": 1.0 / epoch,
           "test_acc": acc, "lr": args.lr, "wall_s": 0.01 * epoch, "steps_per_s": 100.0, "step": 10 * epoch}
    if args.val_split:
        rec["val_acc"] = 1 - abs(args.lr - 0.05)
    if args.lr == 666:
        rec["diverged"] = True
        append_jsonl(out / "metrics.jsonl", rec)
        atomic_write_json(out / "result.json", {"status": "diverged", "epochs_completed": epoch - 1, "final": rec, "wall_s": 0.01})
        sys.exit(3)
    append_jsonl(out / "metrics.jsonl", rec)
atomic_write_json(out / "result.json", {"status": "finished", "epochs_completed": args.epochs, "final": rec, "wall_s": 0.02})
'''

SPEC = """
name = "t"
[defaults]
dataset = "fashion-mnist"
model = "cnn"
epochs = 2
threads = 1

[[study]]
name = "headline"
[study.grid]
batch_size = [8, 2]
seed = [1, 2]
[[study.variant]]
name = "sgd"
optimizer = "sgd"
lr = 0.1
[[study.variant]]
name = "trsgd"
role = "tr"
base = "sgd"
optimizer = "trsgd"
lr = 0.1
lam = 0.2
lam_scaling = "inverse_lr"
[[study.variant]]
name = "trsgd-lam0"
role = "control"
base = "sgd"
optimizer = "trsgd"
lam = 0.0
inner_lr_decay = false

[[study]]
name = "fig1"
[study.grid]
seed = [1]
batch = [{label = "bs8", batch_size = 8, epochs = 1}, {label = "bs32", batch_size = 32, epochs = 4}]
[[study.variant]]
name = "sgd"
optimizer = "sgd"
"""


def write(tmp_path, text, name="spec.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def fake_train(tmp_path):
    path = tmp_path / "fake_train.py"
    path.write_text(FAKE_TRAIN)
    return lambda run, resume: [sys.executable, str(path), *sweep.train_arguments(run, resume=resume)]


def starts(folder: Path) -> list[dict]:
    path = folder / "starts.log"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def test_plan_expands_grid_in_seed_major_priority_order(tmp_path):
    spec = sweep.load_spec(write(tmp_path, SPEC))
    runs, notes = sweep.plan(spec, tmp_path / "runs")
    assert not notes
    assert len(runs) == 3 * 2 * 2 + 2
    head = [r for r in runs if r.study == "headline"]
    # Every configuration's seed 1 comes before any seed 2.
    seeds = [r.grid["seed"] for r in head]
    assert seeds == ["1"] * 6 + ["2"] * 6
    first = head[0]
    assert first.folder == tmp_path / "runs" / "headline" / "sgd" / "batch_size-8_seed-1"
    assert first.options == {"dataset": "fashion-mnist", "model": "cnn", "epochs": 2, "threads": 1,
                             "batch_size": 8, "seed": 1, "optimizer": "sgd", "lr": 0.1}
    tr = [r for r in head if r.variant == "trsgd"][0]
    assert (tr.role, tr.base) == ("tr", "sgd")
    # A table-valued axis sets several options together (fixed iterations in Figure 1).
    fig1 = [r for r in runs if r.study == "fig1"]
    assert [(r.grid["batch"], r.options["batch_size"], r.options["epochs"]) for r in fig1] == [
        ("bs8", 8, 1), ("bs32", 32, 4)]


def test_train_arguments_map_booleans_and_names():
    run = sweep.Run("s", "v", "control", "sgd", {}, {"batch_size": 8, "lam": 0.0, "inner_lr_decay": False,
                    "restart_inner_each_epoch": True, "lr": 1e-3}, Path("runs/x"), ())
    args = sweep.train_arguments(run, resume=True)
    assert args == ["--batch-size", "8", "--lam", "0", "--no-inner-lr-decay", "--restart-inner-each-epoch",
                    "--lr", "0.001", "--out", "runs/x", "--resume"]


def test_dry_run_prints_one_torchrun_line_per_run(tmp_path, capsys):
    spec = write(tmp_path, SPEC)
    assert sweep.main([str(spec), "--dry-run", "--out", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 14
    assert all(l.startswith("torchrun --standalone --nproc-per-node=1 -m tralgo train ") for l in lines)
    assert "--optimizer trsgd" in lines[1] and "--lam-scaling inverse_lr" in lines[1]
    assert not (tmp_path / "r").exists()  # a dry run touches nothing


def test_shipped_specs_are_valid_and_paper_dry_run_prints_torchrun_lines(capsys):
    root = Path(__file__).resolve().parents[2] / "experiments" / "specs"
    specs = sorted(root.glob("*.toml"))
    assert {p.stem for p in specs} >= {"paper", "cpu"}
    for path in specs:
        sweep.load_spec(path)
    assert sweep.main([str(root / "paper.toml"), "--dry-run"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if not l.startswith("#")]
    assert len(lines) > 100
    assert all(l.startswith("torchrun ") for l in lines)
    assert any("--dataset cifar100" in l and "--model densenet121" in l and "--batch-size 8" in l for l in lines)


@pytest.mark.parametrize("bad, message", [
    ("[[study]]\nname='a'\n[[study.variant]]\nname='x'\noptimizer='sgd'\nlrr=0.1\n", "unknown train option 'lrr'"),
    ("[[study]]\nname='a'\n[[study.variant]]\nname='x'\noptimizer='sgd'\nout='z'\n", "'out' is set by the sweep"),
    ("[[study]]\nname='a'\n[[study.variant]]\nname='x'\nrole='tr'\nbase='nope'\noptimizer='trsgd'\n", "'base' must name"),
    ("[[study]]\nname='a'\n[study.grid]\nseed=[]\n[[study.variant]]\nname='x'\noptimizer='sgd'\n", "grid axis 'seed'"),
    ("name='x'\n", "at least one [[study]]"),
    ("[[study]]\nname='a'\n[[study.variant]]\nname='x'\noptimizer='sgd'\n[study.tune]\nval_split=0\nseeds=[1]\n", "val_split must be an int >= 1"),
    ("[[study\n", "not valid TOML"),
    # Defect 4: misspelled tables, unknown keys, wrong types and bad values, all before launch.
    ("[default]\nepochs=1\n[[study]]\nname='a'\n[[study.variant]]\nname='x'\noptimizer='sgd'\n",
     "unknown key or table 'default' (misspelled?)"),
    ("[[study]]\nname='a'\n[study.gird]\nseed=[1]\n[[study.variant]]\nname='x'\noptimizer='sgd'\n",
     "study #1: unknown key or table 'gird'"),
    ("[[study]]\nname='a'\nvariant=[1]\n", "needs at least one [[study.variant]] table, got [1]"),
    ("[[study]]\nname='a'\n[[study.variant]]\nname='x'\noptimizer='trsgd'\ninner_lr_decay='yes'\n",
     "inner_lr_decay must be true or false, got 'yes'"),
    ("[[study]]\nname='a'\n[[study.variant]]\nname='x'\noptimizer='sgd'\ntest_subset=100\n",
     "unknown train option 'test_subset'"),
    ("[[study]]\nname='a'\n[study.grid]\nepochs=[1, 'two']\n[[study.variant]]\nname='x'\noptimizer='sgd'\n",
     "grid axis 'epochs': epochs must be an integer, got 'two'"),
    ("[[study]]\nname='a'\n[[study.variant]]\nname='x'\noptimizer='sdg'\n", "optimizer must be one of sgd"),
    ("[[study]]\nname='a'\n[[study.variant]]\nname='x'\noptimizer='sgd'\noverwrite=true\n",
     "'overwrite' is set by the sweep"),
    ("[[study]]\nname='a'\n[study.grid]\nbatch_size=[8, 0]\n[[study.variant]]\nname='x'\noptimizer='sgd'\n",
     "study 'a' variant 'x' (batch_size-0): batch_size must be an integer >= 1, got 0"),
    ("[[study]]\nname='a'\n[[study.variant]]\nname='x'\noptimizer='sgd'\n[study.tune]\nval_split=10\n"
     "seeds=[1]\nsearch={x={lr=[0.1, 'big']}}\n", "[tune.search.x]: lr must be a number, got 'big'"),
    ("[[study]]\nname='a'\n[[study.variant]]\nname='x'\noptimizer='sgd'\n[study.tune]\nval_split=10\n"
     "seeds=[1]\nserach={}\n", "unknown key or table 'serach'"),
    ("[[study]]\nname='a'\n[study.report]\ncontrasts=[['x', 'y']]\n[[study.variant]]\nname='x'\noptimizer='sgd'\n",
     "names 'y', not a variant of the study"),
])
def test_bad_specs_fail_with_one_clear_message(tmp_path, capsys, bad, message):
    spec = write(tmp_path, bad)
    assert sweep.main([str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_every_train_option_is_accepted_by_a_spec(tmp_path, capsys):
    # Real train options the old hand-kept list refused, and eval_every (issue 10).
    text = ("[defaults]\nlookahead_alpha=0.3\neval_batch_size=100\naugment=false\neval_every=5\n"
            "data_dir='d'\ndevice='cpu'\nthreads=1\n"
            "[[study]]\nname='a'\n[[study.variant]]\nname='x'\noptimizer='lookahead-sgd'\ninner_lr_decay=false\n")
    assert sweep.main([str(write(tmp_path, text)), "--dry-run", "--out", str(tmp_path / "r")]) == 0
    line = capsys.readouterr().out.strip()
    for flag in ("--lookahead-alpha 0.3", "--eval-batch-size 100", "--no-augment", "--eval-every 5",
                 "--data-dir d", "--no-inner-lr-decay"):
        assert flag in line
    from tralgo.experiments.train_cli import build_parser

    args = shlex.split(line)
    build_parser().parse_args(args[args.index("train") + 1:])  # tralgo train accepts the printed line


def test_cli_errors_without_traceback(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "tralgo", "sweep", str(tmp_path / "nope.toml")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    bad_workers = subprocess.run([sys.executable, "-m", "tralgo", "sweep", "x.toml", "--workers", "0"],
                                 capture_output=True, text=True)
    assert bad_workers.returncode == 2 and "--workers must be an int >= 1" in bad_workers.stderr


def test_pool_runs_everything_skips_finished_and_records_failures(tmp_path, fake_train):
    text = SPEC.replace('name = "trsgd-lam0"', 'name = "trsgd-lam0"\nlr = 999')  # this variant crashes
    text = text.replace('lam = 0.2', 'lam = 0.2\nseed = 1')  # keep seeds distinct below
    spec = sweep.load_spec(write(tmp_path, SPEC.replace('lam = 0.0', 'lam = 0.0\nlr = 999')))
    out = tmp_path / "runs"
    runner = sweep.SweepRunner(spec, out, workers=2, command=fake_train, poll_s=0.02, echo=lambda *_: None)
    summary = runner.run()
    assert summary["finished"] == 10 and summary["failed"] == 4
    assert 0 < summary["busy_s"] and summary["wall_s"] > 0
    failed = out / "headline" / "trsgd-lam0" / "batch_size-8_seed-1"
    status = json.loads((failed / sweep.STATUS_FILE).read_text())
    assert status["status"] == "failed" and status["returncode"] == 1 and "simulated crash" in status["error"]
    ok = out / "headline" / "sgd" / "batch_size-8_seed-1"
    assert json.loads((ok / "result.json").read_text())["status"] == "finished"
    assert json.loads((ok / sweep.SWEEP_FILE).read_text())["memberships"][0]["variant"] == "sgd"
    events = [json.loads(l) for l in (out / sweep.EVENTS_FILE).read_text().splitlines()]
    assert events[0]["event"] == "session_start" and events[-1]["event"] == "session_end"
    assert sum(e["event"] == "run_end" for e in events) == 14
    # A second sweep starts only the failed runs again; finished ones are skipped.
    summary = sweep.SweepRunner(spec, out, workers=2, command=fake_train, poll_s=0.02, echo=lambda *_: None).run()
    assert summary["finished"] == 0 and summary["failed"] == 4
    assert len(starts(ok)) == 1 and len(starts(failed)) == 2


def test_interrupted_run_is_resumed_and_divergence_is_not_a_failure(tmp_path, fake_train):
    spec = sweep.load_spec(write(tmp_path, SPEC.replace("lr = 0.1\n[[study.variant]]\nname = \"trsgd\"",
                                                        "lr = 666\n[[study.variant]]\nname = \"trsgd\"")))
    out = tmp_path / "runs"
    interrupted = out / "headline" / "trsgd" / "batch_size-2_seed-2"
    interrupted.mkdir(parents=True)
    (interrupted / "checkpoint.pt").write_bytes(b"x")
    said = []
    summary = sweep.SweepRunner(spec, out, workers=3, command=fake_train, poll_s=0.02, echo=said.append,
                                only=["headline"]).run()
    assert summary["diverged"] == 4 and summary["failed"] == 0 and summary["finished"] == 8
    # Every launch passes --resume (tralgo train starts a fresh folder and continues an old one).
    assert starts(interrupted)[0]["resume"] is True
    assert f"resume  {interrupted}" in said and f"start   {out / 'headline' / 'sgd' / 'batch_size-8_seed-1'}" in said
    assert sweep.run_status(out / "headline" / "sgd" / "batch_size-8_seed-1") == "diverged"


def _lr_spec(lr: float) -> str:
    return f"""
[defaults]
epochs = 1
[[study]]
name = "s"
[study.grid]
seed = [1, 2]
[[study.variant]]
name = "sgd"
optimizer = "sgd"
lr = {lr}
"""


def test_a_finished_run_of_a_changed_spec_is_moved_aside_and_run_again(tmp_path, fake_train):
    # Defect 1: with lr 0.01 -> 0.05 the second sweep used to say "0 to run" and keep lr 0.01.
    out = tmp_path / "runs"
    quiet = dict(workers=2, command=fake_train, poll_s=0.02, echo=lambda *_: None)
    summary = sweep.SweepRunner(sweep.load_spec(write(tmp_path, _lr_spec(0.01))), out, **quiet).run()
    assert summary["finished"] == 2
    folder = out / "s" / "sgd" / "seed-1"
    assert json.loads((folder / "config.json").read_text())["lr"] == 0.01
    changed = sweep.load_spec(write(tmp_path, _lr_spec(0.05)))
    runs, _ = sweep.plan(changed, out)
    assert sweep.stale_differences(runs[0]) == ["lr: 0.01 in the folder, 0.05 now"]
    said = []
    summary = sweep.SweepRunner(changed, out, **{**quiet, "echo": said.append}).run()
    assert summary["finished"] == 2 and summary["failed"] == 0
    assert json.loads((folder / "config.json").read_text())["lr"] == 0.05
    assert json.loads((folder / sweep.SWEEP_FILE).read_text())["config"]["lr"] == 0.05
    # The finished lr-0.01 work is kept, moved aside, and the sweep said so.
    stale = out / "s" / "sgd" / "seed-1.stale-1"
    assert json.loads((stale / "config.json").read_text())["lr"] == 0.01
    assert json.loads((stale / "result.json").read_text())["status"] == "finished"
    assert any(line.startswith(f"changed {folder}") and "lr: 0.01 in the folder, 0.05 now" in line
               and "seed-1.stale-1" in line for line in said)
    # A third sweep with the same spec has nothing to do.
    assert sweep.SweepRunner(changed, out, **quiet).run()["finished"] == 0


def test_an_explicit_default_is_the_same_run(tmp_path, fake_train):
    # Identity is the resolved configuration: spelling out a default changes nothing.
    out = tmp_path / "runs"
    quiet = dict(workers=2, command=fake_train, poll_s=0.02, echo=lambda *_: None)
    sweep.SweepRunner(sweep.load_spec(write(tmp_path, _lr_spec(0.1))), out, **quiet).run()
    same = sweep.load_spec(write(tmp_path, _lr_spec(0.1).replace("lr = 0.1", "lr = 0.1\nmomentum = 0.9")))
    runs, _ = sweep.plan(same, out)
    assert all(not sweep.stale_differences(r) for r in runs)
    assert sweep.SweepRunner(same, out, **quiet).run()["finished"] == 0


def test_changed_spec_does_not_reuse_an_interrupted_folder(tmp_path, fake_train):
    out = tmp_path / "runs"
    spec = sweep.load_spec(write(tmp_path, SPEC))
    sweep.SweepRunner(spec, out, workers=2, command=fake_train, poll_s=0.02, echo=lambda *_: None,
                      max_runs=1).run()
    first = out / "headline" / "sgd" / "batch_size-8_seed-1"
    assert sweep.run_status(first) == "finished"
    (first / "result.json").unlink()  # pretend it was interrupted, then change the spec
    changed = sweep.load_spec(write(tmp_path, SPEC.replace("lr = 0.1", "lr = 0.3", 1)))
    summary = sweep.SweepRunner(changed, out, workers=1, command=fake_train, poll_s=0.02, echo=lambda *_: None,
                                max_runs=1).run()
    assert summary["finished"] == 1
    assert json.loads((first / "config.json").read_text())["lr"] == 0.3
    assert (first.parent / (first.name + ".stale-1") / "metrics.jsonl").is_file()


def test_status_shows_running_runs_and_the_time_left(tmp_path, capsys):
    spec_text = _lr_spec(0.1).replace("epochs = 1", "epochs = 4").replace("seed = [1, 2]", "seed = [1, 2, 3]")
    spec_text += '[[study.variant]]\nname = "trsgd"\noptimizer = "trsgd"\nlr = 0.1\n'
    out = tmp_path / "runs"
    runs, _ = sweep.plan(sweep.load_spec(write(tmp_path, spec_text)), out)
    folder = {(r.variant, r.grid["seed"]): r.folder for r in runs}
    for (variant, seed), wall in {("sgd", "1"): 100.0, ("sgd", "2"): 300.0, ("trsgd", "1"): 1000.0}.items():
        folder[variant, seed].mkdir(parents=True)
        (folder[variant, seed] / "result.json").write_text(json.dumps({"status": "finished", "wall_s": wall}))
    # trsgd seed 2: half its epochs done, its trainer alive (a process whose command line names the folder)
    half = folder["trsgd", "2"]
    half.mkdir(parents=True)
    (half / "checkpoint.pt").write_bytes(b"")
    (half / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    trainer = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); time.sleep(60)", str(half)],
                               stdout=subprocess.PIPE)
    # Popen returns while the kernel may still be setting up the exec'd process, and until then its
    # /proc/<pid>/cmdline reads empty (measured: a third of the reads right after Popen, on 2 busy
    # cores): wait until the child has run a line of Python.
    trainer.stdout.readline()
    try:
        (half / sweep.PID_FILE).write_text(str(trainer.pid))
        assert sweep.main([str(tmp_path / "spec.toml"), "--out", str(out), "--status", "--workers", "2"]) == 0
        text = capsys.readouterr().out
        assert "finished 3  new 2  running 1" in text
    finally:
        trainer.kill()
        trainer.wait()
    # left: sgd seed 3 at sgd's mean (200 s), trsgd seed 3 at trsgd's (1000 s), half of trsgd seed 2 (500 s)
    assert "left: 3 runs, about 0.5 h of run time at the finished runs' pace, 0.2 h on 2 workers" in text
    states = {r.folder: sweep.run_status(r.folder) for r in runs}
    assert sweep.time_left(runs, states) == (3, pytest.approx(1700.0))
    assert sweep.main([str(tmp_path / "spec.toml"), "--out", str(out), "--status"]) == 0
    assert "finished 3  interrupted 1  new 2" in capsys.readouterr().out  # its trainer has ended


def test_status_counts_a_changed_run_as_stale(tmp_path, fake_train, capsys):
    out = tmp_path / "runs"
    sweep.SweepRunner(sweep.load_spec(write(tmp_path, _lr_spec(0.01))), out, workers=2, command=fake_train,
                      poll_s=0.02, echo=lambda *_: None).run()
    assert sweep.main([str(write(tmp_path, _lr_spec(0.05))), "--out", str(out), "--status"]) == 0
    assert "stale (other settings; will rerun) 2" in capsys.readouterr().out
    from tralgo.experiments import report

    coverage = report.coverage_section(tmp_path / "spec.toml", out)
    assert "| s | 2 | 0 | 0 | 0 | 0 | 2 | 0 |" in coverage  # both runs stale, none counted finished


def test_a_dirty_checkout_is_refused_unless_allowed_and_then_recorded(tmp_path, monkeypatch, capsys):
    spec = write(tmp_path, _lr_spec(0.1))
    dirty = {"git_commit": "abc123", "git_dirty": True, "dirty_files": ["src/tralgo/trsgd.py"]}
    monkeypatch.setattr(sweep.config_lib, "code_version", lambda root=None: dict(dirty))
    assert sweep.main([str(spec), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "uncommitted changes (1 files: src/tralgo/trsgd.py)" in err and "--allow-dirty" in err
    assert not (tmp_path / "r").exists()
    made = {}

    class Recorder:
        def __init__(self, *args, **kwargs):
            made.update(kwargs)

        def request_stop(self, *_):
            pass

        def run(self):
            return {"finished": 0, "diverged": 0, "failed": 0, "interrupted": 0, "wall_s": 0.0, "busy_s": 0.0,
                    "workers": 1, "utilization": 0.0, "stopped": False}

    monkeypatch.setattr(sweep, "SweepRunner", Recorder)
    assert sweep.main([str(spec), "--out", str(tmp_path / "r"), "--allow-dirty"]) == 0
    assert made["code"] == {**dirty, "allow_dirty": True}


def test_each_launch_records_the_code_it_ran(tmp_path, fake_train):
    out = tmp_path / "runs"
    code = {"git_commit": "abc123", "git_dirty": False, "dirty_files": [], "allow_dirty": False}
    sweep.SweepRunner(sweep.load_spec(write(tmp_path, _lr_spec(0.1))), out, workers=1, command=fake_train,
                      poll_s=0.02, echo=lambda *_: None, code=code).run()
    assert json.loads((out / "s" / "sgd" / "seed-1" / sweep.SWEEP_FILE).read_text())["code"] == code


TUNE_SPEC = """
[defaults]
epochs = 1
[[study]]
name = "tuned"
[study.grid]
batch_size = [8]
seed = [1, 2, 3]
[[study.variant]]
name = "sgd"
optimizer = "sgd"
lr = 0.1
[[study.variant]]
name = "trsgd"
role = "tr"
base = "sgd"
optimizer = "trsgd"
lr = 0.1
[study.tune]
val_split = 100
seeds = [1, 2]
[study.tune.search]
sgd = { lr = [0.2, 0.05, 666] }
trsgd = { lr = [0.02, 0.1], lam = [0.0, 1.0] }
"""


def test_tuning_picks_best_validation_lr_then_runs_the_study(tmp_path, fake_train, capsys):
    spec_path = write(tmp_path, TUNE_SPEC)
    out = tmp_path / "runs"
    assert sweep.main([str(spec_path), "--dry-run", "--out", str(out), "--launcher", "python"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert sum("--val-split 100" in l for l in printed) == 3 * 2 + 4 * 2
    assert printed[-1].startswith("# study 'tuned': 2 tuned configurations (6 runs) wait")
    spec = sweep.load_spec(spec_path)
    summary = sweep.SweepRunner(spec, out, workers=2, command=fake_train, poll_s=0.02, echo=lambda *_: None).run()
    assert summary["finished"] == 12 + 6 and summary["diverged"] == 2
    runs, notes = sweep.plan(spec, out)
    final = [r for r in runs if not r.tuning]
    assert not notes and len(final) == 6
    # val_acc = 1 - |lr - 0.05|: sgd picks 0.05 (666 diverged -> scored 0); trsgd's tie on lam -> smaller lam.
    assert {r.options["lr"] for r in final if r.variant == "sgd"} == {0.05}
    assert {(r.options["lr"], r.options["lam"]) for r in final if r.variant == "trsgd"} == {(0.02, 0.0)}
    # The choice is recorded with the run, for the report.
    assert all(r.membership()["tuned"] == {"lr": 0.05} for r in final if r.variant == "sgd")
    assert all("val_split" not in r.options for r in final)


def test_identical_runs_of_two_studies_are_trained_once(tmp_path, fake_train):
    text = SPEC + """
[[study]]
name = "table4"
[study.grid]
batch_size = [8, 32]
seed = [1, 2]
[[study.variant]]
name = "sgd-b"
optimizer = "sgd"
lr = 0.1
"""
    spec = sweep.load_spec(write(tmp_path, text))
    out = tmp_path / "runs"
    runs, _ = sweep.plan(spec, out)
    shared = [r for r in runs if r.also]
    assert len(shared) == 2 and all(r.study == "headline" and r.grid["batch_size"] == "8" for r in shared)
    assert shared[0].also[0]["study"] == "table4" and shared[0].also[0]["variant"] == "sgd-b"
    only_t4, _ = sweep.plan(spec, out, only=["table4"])
    assert len(only_t4) == 4 and {r.folder.parts[-3] for r in only_t4} == {"headline", "table4"}
    summary = sweep.SweepRunner(spec, out, workers=2, command=fake_train, poll_s=0.02, echo=lambda *_: None,
                                only=["table4"]).run()
    assert summary["finished"] == 4
    recorded = json.loads((shared[0].folder / sweep.SWEEP_FILE).read_text())
    assert [m["study"] for m in recorded["memberships"]] == ["headline", "table4"]


def test_a_bad_value_with_existing_tuning_folders_is_one_error(tmp_path, fake_train, capsys):
    out = tmp_path / "runs"
    spec = sweep.load_spec(write(tmp_path, TUNE_SPEC))
    sweep.SweepRunner(spec, out, workers=2, command=fake_train, poll_s=0.02, echo=lambda *_: None, max_runs=2).run()
    bad = write(tmp_path, TUNE_SPEC.replace("sgd = { lr = [0.2, 0.05, 666] }", "sgd = { lr = [0.2, 0.05, -1.0] }"))
    assert sweep.main([str(bad), "--out", str(out), "--status"]) == 2
    err = capsys.readouterr().err
    assert "lr must be a finite number > 0, got -1.0" in err and err.count("\n") == 1


def _other_value(f):
    """A valid value of field ``f`` other than its default."""
    from tralgo.experiments import config as config_lib

    base, _ = config_lib.field_type(f)
    choices = config_lib.choices_of(f)
    if choices:
        return next(c for c in choices if c != f.default)
    if base is bool:
        return not f.default
    if base is int:
        return 2 if f.default is None else f.default + 1
    if base is float:
        return 0.5 if f.default is None else f.default / 2
    return "somewhere"


def test_every_spec_option_reaches_train_with_its_value(tmp_path, capsys):
    # The spec's keys, the printed command and train's parser all come from config.py: each
    # option set to a non-default value in a spec arrives in train's TrainConfig/RunOptions.
    from tralgo.experiments.train_cli import build_parser, config_from_args

    values = {name: _other_value(f) for name, f in sweep.SPEC_OPTIONS.items()}
    values["optimizer"] = "trsgd"  # a valid combination: lookahead options are accepted by any optimizer
    values["lookahead_alpha"] = 0.25
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items() if k != "seed")
    text = f"[defaults]\n{body}\n[[study]]\nname='a'\n[study.grid]\nseed=[{values['seed']}]\n" \
           "[[study.variant]]\nname='x'\n"
    assert sweep.main([str(write(tmp_path, text)), "--dry-run", "--launcher", "python", "--out", str(tmp_path / "r")]) == 0
    args = shlex.split(capsys.readouterr().out.strip())
    config, options = config_from_args(build_parser().parse_args(args[args.index("train") + 1:]))
    for name, value in values.items():
        got = getattr(config, name) if hasattr(config, name) else getattr(options, name)
        assert got == value, name


def test_tuning_can_validate_on_images_after_the_subset(tmp_path):
    text = TUNE_SPEC.replace("val_split = 100\n", "val_split = 100\nval_from = \"after_subset\"\n")
    text = text.replace("[defaults]\nepochs = 1", "[defaults]\nepochs = 1\nsubset = 1000")
    runs, _ = sweep.plan(sweep.load_spec(write(tmp_path, text)), tmp_path / "runs")
    tuning = [r for r in runs if r.tuning]
    assert tuning and all(r.options["val_from"] == "after_subset" and r.options["subset"] == 1000 for r in tuning)
    bad = write(tmp_path, TUNE_SPEC.replace("val_split = 100\n", "val_split = 100\nval_from = \"tset\"\n"), "bad.toml")
    with pytest.raises(sweep.SpecError, match="val_from must be one of subset, after_subset"):
        sweep.load_spec(bad)


QMC_SPEC = """
[defaults]
epochs = 1
subset = 1000
[[study]]
name = "tuned"
[study.grid]
seed = [1, 2, 3, 4, 5]
[[study.variant]]
name = "sgd"
optimizer = "sgd"
[[study.variant]]
name = "trsgd"
role = "tr"
base = "sgd"
optimizer = "trsgd"
[study.tune]
val_split = 500
val_from = "after_subset"
seeds = [1]
trials = 12
[study.tune.search]
sgd = { lr = { log = [0.001, 1.0] } }
trsgd = { lr = { log = [0.001, 1.0] }, lam = { log = [0.01, 10.0] }, inner_steps = [5, 10, 20] }
"""


def test_quasi_random_search_gives_each_variant_the_same_budget_inside_the_space(tmp_path):
    spec = sweep.load_spec(write(tmp_path, QMC_SPEC))
    runs, notes = sweep.plan(spec, tmp_path / "runs")
    tuning = [r for r in runs if r.tuning]
    sgd = [r.options for r in tuning if r.variant == "sgd"]
    tr = [r.options for r in tuning if r.variant == "trsgd"]
    assert len(sgd) == len(tr) == 12  # 12 trials x 1 tuning seed each
    assert all(0.001 <= o["lr"] <= 1.0 and 0.01 <= o["lam"] <= 10 and o["inner_steps"] in (5, 10, 20) for o in tr)
    assert len({o["lr"] for o in sgd}) == 12 and {o["inner_steps"] for o in tr} == {5, 10, 20}
    # Log scale: about half of the 12 lrs below the geometric midpoint 0.0316 (a linear draw: ~0).
    assert 4 <= sum(o["lr"] < 0.0316 for o in sgd) <= 8
    # Deterministic: planning again (each time a worker frees) gives the same candidates.
    again, _ = sweep.plan(spec, tmp_path / "runs")
    assert [r.options for r in again if r.tuning] == [r.options for r in tuning]
    assert notes == ["study 'tuned': 2 tuned configurations (10 runs) wait for their tuning runs to finish"]


@pytest.mark.parametrize("change, message", [
    (("trials = 12\n", ""), "'lr' is a range, which needs [study.tune] trials = N"),
    (("{ log = [0.001, 1.0] } }", "{ log = [0.0, 1.0] } }"), "must be a list of values, { log = [low, high] }"),
    (("inner_steps = [5, 10, 20]", "inner_steps = { range = [5, 20] }"), "for a number setting"),
    (("trials = 12", "trials = 0"), "trials must be an int >= 1, got 0"),
])
def test_bad_search_spaces_are_one_error(tmp_path, change, message):
    with pytest.raises(sweep.SpecError, match=re.escape(message)):
        sweep.load_spec(write(tmp_path, QMC_SPEC.replace(*change)))


def test_a_malformed_time_to_target_is_one_error(tmp_path):
    text = "[[study]]\nname='a'\n[study.report]\ntarget={metric='val_acc'}\n[[study.variant]]\nname='x'\noptimizer='sgd'\n"
    with pytest.raises(sweep.SpecError, match="target must be"):
        sweep.load_spec(write(tmp_path, text))
    sweep.load_spec(write(tmp_path, text.replace("{metric='val_acc'}", "{metric='val_acc', value=0.9}")))


def test_a_run_claimed_by_one_sweep_is_not_launched_by_another(tmp_path, fake_train):
    # The window between "this run needs running" and the trainer taking its folder lock: a second
    # sweep on the same out (or the same out spelled another way) must pick another run, not this one.
    spec = sweep.load_spec(write(tmp_path, SPEC))
    out = tmp_path / "runs"
    quiet = dict(workers=1, command=fake_train, poll_s=0.02, echo=lambda *_: None)
    first = sweep.SweepRunner(spec, out, **quiet)
    second = sweep.SweepRunner(spec, tmp_path / "." / "runs", **quiet)
    claimed = first._next_run()
    assert claimed is not None
    other = second._next_run()
    assert other is not None and other.folder.resolve() != claimed.folder.resolve()
    assert [f.resolve() for f in second.attempted] == [claimed.folder.resolve()]  # reported busy, skipped
    # Once the first sweep has run it and let go, nobody starts it again: it is finished.
    first._launch(claimed)
    while first.active:
        first._reap()
    assert json.loads((claimed.folder / "result.json").read_text())["status"] == "finished"
    third = sweep.SweepRunner(spec, out, **quiet)
    assert all(r.folder != claimed.folder for r in iter(third._next_run, None))


def test_two_sweeps_started_together_train_each_run_once(tmp_path):
    # Real processes, as when a job scheduler starts the same sweep twice: every run starts once,
    # none is recorded as failed, and together they finish the plan.
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN.replace("for epoch in range(1, args.epochs + 1):",
                                       "import time\ntime.sleep(0.3)\nfor epoch in range(1, args.epochs + 1):"))
    spec_path = write(tmp_path, SPEC)
    script = textwrap.dedent(f"""
        import sys
        from tralgo.experiments import sweep
        cmd = lambda run, resume: [sys.executable, {str(fake)!r}, *sweep.train_arguments(run, resume=resume)]
        s = sweep.SweepRunner(sweep.load_spec({str(spec_path)!r}), sys.argv[1], workers=2, command=cmd, poll_s=0.01,
                              echo=lambda *_: None).run()
        print(s["finished"], s["failed"])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, out], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
             for out in ("runs", str(tmp_path / "runs"))]
    results = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(int(r[0]) for r in results) == 14 and all(r[1] == "0" for r in results)
    folders = [p.parent for p in (tmp_path / "runs").rglob("result.json")]
    assert len(folders) == 14 and all(len(starts(f)) == 1 for f in folders)
