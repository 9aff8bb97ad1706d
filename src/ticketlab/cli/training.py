"""Commands that train: `train`, `lottery`, `earlybird`."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ticketlab.cli.flags import (Result, add_config_flags, add_runtime_flags, add_training_flags, config_from_args,
                                runtime_from_args, training_from_args, typed)
from ticketlab.cli.report import figures_hint
from ticketlab.config import LotteryConfig, TicketlabError, coerce


def describe_training(result: Any) -> Result:
    summary = result.summary
    best, final = summary["best"], summary["final"]
    lines = [
        f"{'finished earlier: ' if result.cached else ''}trained {result.model_config.name} on {result.data.name} "
        f"for {result.training.steps} ({summary['iterations']} iterations, {summary['wall_time']:.1f} s)",
        f"  data: {summary['data_source']}",
        f"  best step {best['step']} by {summary['select_by']}: val acc {best['val_acc']:.4f}, "
        f"test acc {best['test_acc']:.4f}",
        f"  final step {final['step']}: val acc {final['val_acc']:.4f}, test acc {final['test_acc']:.4f}",
        f"  run: {result.path}",
    ]
    payload = {"run_dir": str(result.path), "cached": result.cached, "metrics": summary}
    return lines, payload


def cmd_train(args: argparse.Namespace) -> Result:
    from ticketlab.training.stage import train

    result = train(*training_from_args(args), runtime_from_args(args))
    return describe_training(result)


def cmd_lottery(args: argparse.Namespace) -> Result:
    from ticketlab.experiments.sections.lottery import describe_lottery
    from ticketlab.lottery.experiment import run_lottery
    from ticketlab.lottery.report import write_report
    from ticketlab.sparsity.schedules import round_rate

    cfg = config_from_args(args, LotteryConfig)
    if args.target_sparsity is not None:
        if cfg.rate != LotteryConfig.rate:
            raise TicketlabError("give either --rate or --target-sparsity, not both")
        cfg = dataclasses.replace(cfg, rate=round_rate(args.target_sparsity, cfg.levels))
    runtime = runtime_from_args(args)
    experiment = run_lottery(
        *training_from_args(args), cfg, runtime, replicates=args.replicates, controls=[c for c in args.controls.split(",") if c],
        control_levels=[coerce(v, int, "--control-levels") for v in args.control_levels.split(",") if v] or None)
    report = write_report(experiment, runtime)
    last = experiment.lotteries[0].levels[-1].retrained.run.name  # levels are at least 1
    return describe_lottery(report) + [
        figures_hint(report.run.name, runtime),
        f"  last level's ticket: {last} (ticketlab export --run {last} -o ticket.safetensors)",
    ], {"run_dir": str(report.path), "rows": report.rows}


def cmd_earlybird(args: argparse.Namespace) -> Result:
    from ticketlab.experiments.sections.structured import describe_earlybird, earlybird_payload
    from ticketlab.structure.earlybird import earlybird

    ratios = [coerce(r, float, "--ratios") for r in args.ratios.split(",") if r.strip()]
    runtime = runtime_from_args(args)
    result = earlybird(*training_from_args(args), ratios, runtime, criterion=args.criterion,
                       threshold=args.threshold, stop=args.stop)
    return describe_earlybird(result) + [figures_hint(result.run.name, runtime)], earlybird_payload(result)


def register(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    train = commands.add_parser("train", help="train a dense network (cached by its hyperparameters)",
                                formatter_class=formatter)
    add_training_flags(train)
    add_runtime_flags(train)
    train.set_defaults(handler=cmd_train)

    lottery = commands.add_parser("lottery", help="iterative pruning with rewinding (lottery tickets), with controls",
                                  formatter_class=formatter)
    add_training_flags(lottery, "training (dense level 0 and every retraining)")
    add_config_flags(lottery, LotteryConfig, "lottery")
    lottery.add_argument("--target-sparsity", type=typed(float, "--target-sparsity"), default=None,
                         help="reach this sparsity at the last level: sets --rate to 1-(1-s)^(1/levels)")
    lottery.add_argument("--replicates", type=typed(int, "--replicates"), default=1,
                         help="seeds: --seed, --seed+1, ...")
    lottery.add_argument("--controls", default="",
                         help="comma-separated: reinit, random_mask, reinit_survivors, finetune, scratch")
    lottery.add_argument("--control-levels", default="", help="levels to run controls on (default: all)")
    add_runtime_flags(lottery)
    lottery.set_defaults(handler=cmd_lottery)

    early = commands.add_parser("earlybird", help="train and detect early-bird tickets (stable channel masks)",
                                formatter_class=formatter)
    add_training_flags(early)
    early.add_argument("--ratios", default="0.3,0.5,0.7", help="channel pruning ratios to detect tickets for")
    early.add_argument("--criterion", default="bn_scale", help="structured criterion that draws the channel masks")
    early.add_argument("--threshold", type=typed(float, "--threshold"), default=0.1,
                       help="normalised Hamming distance that counts as stable")
    early.add_argument("--stop", action="store_true", help="stop training once every ratio has its ticket")
    add_runtime_flags(early)
    early.set_defaults(handler=cmd_earlybird)
