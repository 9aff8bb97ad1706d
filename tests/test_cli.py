import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ticketlab.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ticketlab.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", ["train", "run", "runs", "presets", "prune", "sweep", "lottery", "search",
                                     "shrink", "export", "earlybird", "criteria", "models"])
def test_every_command_has_help_with_each_default_once(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps help texts across lines
    if command not in ("presets", "criteria", "models"):  # the listings have no flag with a value
        assert "(default:" in text
    for flag_help in text.split(" --")[1:]:
        assert flag_help.count("(default") <= 1, flag_help
    assert "(default: None)" not in text and "(default: False)" not in text


def test_a_closed_pipe_ends_the_command_quietly_and_main_leaves_sigpipe_ignored(capsys):
    """`ticketlab runs | head` ends without a traceback; and main() never gives SIGPIPE its default
    action, which would let a write to a just-died worker kill the study's driver (or the caller)."""
    reading, writing = os.pipe()
    os.close(reading)  # the reader is gone before the command writes a byte
    try:
        ended = subprocess.run([sys.executable, "-m", "ticketlab.cli", "models"], stdout=writing,
                               stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(writing)
    assert (ended.returncode, ended.stderr) == (128 + signal.SIGPIPE, "")
    assert main(["models"]) == 0 and "lenet300_100" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN


def test_train_help_lists_the_issue_flags(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--model", "--dataset", "--epochs", "--optimizer", "--lr", "--batch-size", "--save-at",
                 "--device", "--threads", "--force", "--quiet", "--json", "--l1", "--schedule", "--milestones"):
        assert flag in text


def test_train_prints_a_summary_and_json_last(tmp_path, capsys):
    args = ["train", "--model", "lenet300_100", "--dataset", "digits", "--epochs", "2", "--optimizer", "adam",
            "--lr", "1.2e-3", "--batch-size", "60", "--quiet", "--json", "--runs-dir", str(tmp_path)]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("trained lenet300_100 on digits for 2ep")
    result = json.loads(lines[-1])
    assert result["command"] == "train" and result["cached"] is False
    assert result["metrics"]["final"]["step"] == "2ep"
    assert 0.5 < result["metrics"]["best"]["val_acc"] <= 1.0
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cached"] is True

    assert main(["runs", "--runs-dir", str(tmp_path), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["status"], r["kind"]) for r in listing["runs"]] == [("done", "train")]


def test_run_quickstart_is_the_default_preset_and_its_smoke_variant_runs_the_whole_study(tmp_path):
    done = run_cli("run", "--smoke", "--json", "--runs-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["preset"] == "quickstart" and result["metrics"]["iterations"] == 10
    rows = result["comparison"]["rows"]
    assert {(row["method"], row["sparsity"]) for row in rows} == {
        (method, sparsity) for method in ("magnitude", "random", "SA", "IMP") for sparsity in (0.5, 0.8)}
    assert all(row["n"] == 2 for row in rows)
    lines = done.stdout.strip().splitlines()
    # the summary marks the best at each sparsity; the table's path and the report's come last
    assert sum(line.rstrip().endswith("*") or "* " in line for line in lines if " 0.8 " in line) >= 1
    assert lines[-3].startswith("  table") and lines[-2] == f"report: {tmp_path.absolute()}/reports/quickstart.html"
    page = Path(result["report"]).read_text()
    assert "<h2" in page and "Masks compared" in page
    assert "Iterative magnitude pruning" not in page  # IMP's levels are the comparison's, not a lottery of their own


def test_run_a_yaml_file_and_bad_files_are_one_line_errors(tmp_path, capsys):
    good = tmp_path / "mine.yaml"
    good.write_text("data: {name: digits}\nmodel: {name: lenet300_100}\ntrain: {steps: 1ep, lr: 1e-2}\n")
    assert main(["run", str(good), "--quiet", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "trained lenet300_100 on digits for 1ep" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    for text, message in [("train: {learning_rate: 1}", "unknown key(s) learning_rate"),
                          ("trian: {}", "unknown section(s) trian"),
                          ("train: {lr: fast}", "'fast' is not a valid float"),
                          ("train: [1, 2", "not valid YAML")]:
        bad.write_text(text)
        assert main(["run", str(bad), "--quiet", "--runs-dir", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, capsys):
    for args, message in [
        (["train", "--dataset", "cifar10"], "cifar10"),
        (["train", "--dataset", "digits", "--model", "resnet1000"], "resnet1000"),
        (["train", "--dataset", "digits", "--steps", "ten"], "bad step 'ten'"),
        (["train", "--dataset", "digits", "--epochs", "1", "--steps", "5it"], "either --epochs or --steps"),
        (["run", "no-such-preset"], "unknown preset 'no-such-preset'"),
    ]:
        assert main([*args, "--quiet", "--runs-dir", str(tmp_path / "runs")]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("ticketlab: error:") and message in err
        assert err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_shrink_command_makes_a_smaller_model_that_loads_and_exports(tmp_path, capsys):
    import ticketlab

    runs = str(tmp_path / "runs")
    assert main(["train", "--dataset", "digits", "--model", "conv2", "--epochs", "1", "--runs-dir", runs, "--quiet"]) == 0
    train_name = capsys.readouterr().out.strip().splitlines()[-1].split("/")[-1]
    assert main(["prune", "--run", train_name, "--runs-dir", runs, "--criterion", "l1_norm", "--structured",
                 "--sparsity", "0.5", "--scope", "layerwise", "--quiet", "--json"]) == 0
    prune_dir = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"]
    assert main(["shrink", "--run", prune_dir, "--onnx", "--retrain", "scratch", "--quiet", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])["metrics"]
    assert json.loads(out[-1])["retrained"]["metrics"]["mode"] == "scratch"
    assert summary["parameters"]["small"] < summary["parameters"]["dense"]
    assert summary["max_difference"] <= 1e-5
    small = ticketlab.load(json.loads(out[-1])["run_dir"] + "/model.safetensors")
    assert small.features.conv1.out_channels == 32
    assert any(line.strip().startswith("ONNX:") for line in out)
