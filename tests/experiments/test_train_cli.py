"""`tralgo train` on the command line: the documented command, errors as one message, --help."""
import json
import os
import subprocess
import sys

import pytest

from tralgo.experiments.train_cli import build_parser, main


@pytest.fixture
def idx_dir(tmp_path, writers):
    folder = tmp_path / "fmnist"
    writers.write_idx_dataset(folder, n_train=64, n_test=32, seed=5)
    return folder


def tralgo(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "tralgo", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


@pytest.mark.slow  # two tralgo processes: ~5 s idle, 15 s on the shared machine
def test_the_documented_command_runs_as_a_subprocess(tmp_path, idx_dir):
    out = tmp_path / "runs" / "x"
    done = tralgo("train", "--dataset", "fashion-mnist", "--model", "cnn", "--optimizer", "trsgd", "--batch-size", "8",
                  "--epochs", "3", "--seed", "0", "--out", str(out), "--subset", "48", "--data-dir", str(idx_dir),
                  "--width", "0.25")
    assert done.returncode == 0, done.stderr
    assert "epoch 3/3" in done.stdout and "Traceback" not in done.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "finished" and result["final"]["step"] == 18  # 48 images / 8 x 3 epochs
    # Started again: refused with exit 2; with --resume: already finished, exit 0.
    again = tralgo("train", "--optimizer", "trsgd", "--epochs", "3", "--out", str(out), "--subset", "48",
                   "--data-dir", str(idx_dir), "--width", "0.25")
    assert again.returncode == 2 and "already finished" in again.stderr and "Traceback" not in again.stderr


def run_main(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
    (["--optimizer", "trsgd", "--lam", "-1"], "lam must be a finite number >= 0, got -1.0"),
    (["--optimizer", "trsgd", "--inner-steps", "0"], "inner_steps must be an integer >= 1, got 0"),
    (["--optimizer", "sdg"], "optimizer must be one of sgd, trsgd, adam, tradam, adamw, tradamw"),
    (["--lam-scaling", "linear"], "lam_scaling must be"),
    (["--threads", "0"], "threads must be an integer >= 1"),
])
def test_bad_values_give_one_message_and_exit_2(capsys, tmp_path, args, message):
    code, out, err = run_main(capsys, "--out", str(tmp_path / "r"), "--epochs", "1", *args)
    assert code == 2
    assert err.startswith("tralgo train: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_missing_data_is_a_data_error_naming_the_remedies(capsys, tmp_path, isolated_data):
    code, _, err = run_main(capsys, "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "empty"), "--epochs", "1",
                            "--out", str(tmp_path / "r"))
    assert code == 1 and "not found" in err and "--download" in err and "Traceback" not in err


def test_corrupt_data_is_reported_without_traceback(tmp_path, idx_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in idx_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    done = tralgo("train", "--data-dir", str(broken), "--epochs", "1", "--out", str(tmp_path / "r"))
    assert done.returncode == 1 and "train-images-idx3-ubyte.gz" in done.stderr and "Traceback" not in done.stderr


def test_an_unwritable_run_folder_is_one_message(capsys, tmp_path, idx_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run_main(capsys, "--data-dir", str(idx_dir), "--epochs", "1", "--width", "0.25",
                            "--out", str(blocker / "run"))
    assert code == 1 and err.startswith("tralgo train: error: ") and str(blocker) in err and err.count("\n") == 1


def test_resume_and_overwrite_together_are_refused(capsys, tmp_path):
    code, _, err = run_main(capsys, "--out", str(tmp_path / "r"), "--resume", "--overwrite")
    assert code == 2 and "exclude each other" in err


def test_tensorboard_without_the_package_is_a_clear_message(capsys, tmp_path, idx_dir):
    pytest.importorskip("torch")
    try:
        import torch.utils.tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed here")
    except ImportError:
        pass
    code, _, err = run_main(capsys, "--data-dir", str(idx_dir), "--epochs", "1", "--width", "0.25",
                            "--out", str(tmp_path / "r"), "--tensorboard")
    assert code == 2 and "--tensorboard needs the 'tensorboard' package" in err


def test_help_explains_every_option():
    parser = build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings
    text = " ".join(parser.format_help().split())
    assert "lam = 2*lambda_w/lr0 = 0.2" in text and "--restart-inner-each-epoch" in text


# -- tralgo demo (its own command; tested here next to the train command it drives) -------------

@pytest.mark.slow  # four training processes: ~10 s on an idle 2-core machine
def test_demo_quick_trains_four_runs_tabulates_plots_and_skips_finished_runs(tmp_path, idx_dir, capsys):
    from tralgo.experiments import demo

    out = tmp_path / "demo"
    assert demo.main(["--quick", "--data-dir", str(idx_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("sgd", "trsgd", "adam", "tradam"):
        result = json.loads((out / name / "result.json").read_text())
        assert result["status"] == "finished" and result["epochs_completed"] == demo.QUICK_EPOCHS
        assert f"| {name} |" in printed
    assert "deviation from the paper" in printed
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "demo.md").read_text().startswith("| run |")
    # Rerunning resumes every run folder: all four report they are already finished.
    assert demo.main(["--quick", "--data-dir", str(idx_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("already finished") == 4


def test_demo_without_the_dataset_says_how_to_get_it(tmp_path, isolated_data, capsys):
    from tralgo.experiments import demo

    code = demo.main(["--quick", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "demo")])
    err = capsys.readouterr().err
    assert code == 1
    assert "apt-get install dataset-fashion-mnist" in err and "--download" in err and "--data-dir" in err
    assert not (tmp_path / "demo").exists()
