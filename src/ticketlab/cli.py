"""The `ticketlab` command: thin wrappers over the library's public functions.

Flags are generated from the config dataclasses (their help texts and defaults), so the
command line and the Python API cannot drift apart. Every command prints a human summary
and, with --json, one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from ticketlab.config import (DataConfig, LotteryConfig, ModelConfig, PruneConfig, Runtime, SearchConfig,
                              TicketlabError, TrainConfig, coerce)

# Flag names where a field's own name would be ambiguous on one command line.
RENAMES = {DataConfig: {"name": "dataset"}, ModelConfig: {"name": "model"}}


def _flag(cls: type, name: str) -> str:
    return "--" + RENAMES.get(cls, {}).get(name, name).replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, title: str, skip: Sequence[str] = ()) -> None:
    group = parser.add_argument_group(title)
    types = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:  # set another way, e.g. a positional argument
            continue
        flag, annotation = _flag(cls, f.name), types[f.name]
        kwargs: dict[str, Any] = {"dest": f"{cls.__name__}.{f.name}", "default": f.default,
                                  "help": f.metadata["help"]}
        if bool in (annotation, *typing.get_args(annotation)):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = lambda text, a=annotation, fl=flag: coerce(text, a, fl)
            kwargs["metavar"] = flag.removeprefix("--").upper().replace("-", "_")
        group.add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace, cls: type, **values: Any) -> Any:
    """The config from its flags; `values` gives the fields that have no flag."""
    return cls(**{f.name: values[f.name] if f.name in values else getattr(args, f"{cls.__name__}.{f.name}")
                  for f in dataclasses.fields(cls)})


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime (does not change results)")
    types = typing.get_type_hints(Runtime)
    for f in dataclasses.fields(Runtime):
        if f.name == "progress":
            continue
        if f.name == "force":
            group.add_argument("--force", action="store_true", help=f.metadata["help"])
            continue
        flag = _flag(Runtime, f.name)
        group.add_argument(flag, dest=f"Runtime.{f.name}", default=f.default,
                           metavar=flag.removeprefix("--").upper().replace("-", "_"),
                           type=lambda text, a=types[f.name], fl=f.name: coerce(text, a, fl),
                           help=f.metadata["help"])
    add_output_flags(parser)


def add_run_flag(parser: argparse.ArgumentParser, what: str = "the training run: its directory or name") -> None:
    parser.add_argument("--run", required=True, help=f"{what} (see `ticketlab runs`)")


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results last")


def add_training_flags(parser: argparse.ArgumentParser, training_title: str = "training") -> None:
    """The flags of a dense training: data, model, training, and --epochs."""
    add_config_flags(parser, DataConfig, "data")
    add_config_flags(parser, ModelConfig, "model")
    add_config_flags(parser, TrainConfig, training_title)
    parser.add_argument("--epochs", type=int, default=None, help="shorthand for --steps Nep")


def training_from_args(args: argparse.Namespace) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    training = config_from_args(args, TrainConfig)
    if args.epochs is not None:
        if training.steps != TrainConfig.steps:
            raise TicketlabError("give either --epochs or --steps, not both")
        training = dataclasses.replace(training, steps=f"{args.epochs}ep")
    return config_from_args(args, DataConfig), config_from_args(args, ModelConfig), training


def runtime_from_args(args: argparse.Namespace) -> Runtime:
    values = {f.name: getattr(args, f"Runtime.{f.name}") for f in dataclasses.fields(Runtime)
              if f.name not in ("force", "progress")}
    return Runtime(**values, force=args.force, progress=not args.quiet)


# --- commands ---------------------------------------------------------------------------

def _describe_training(result: Any) -> tuple[list[str], dict[str, Any]]:
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


def cmd_train(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.training.stage import train

    result = train(*training_from_args(args), runtime_from_args(args))
    return _describe_training(result)


def cmd_run(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.experiments import run_preset
    from ticketlab.presets import load_preset

    preset = load_preset(args.preset)
    result = run_preset(preset.smoked() if args.smoke else preset, runtime_from_args(args))
    lines, payload = _describe_training(result.train)
    lines = [f"preset {result.preset.name}: {result.preset.description}", result.data_note, *lines]
    payload = {"preset": result.preset.name, "data_note": result.data_note, **payload}
    if result.prune is not None:
        lines += _describe_prune(result.prune)
        payload["prune"] = {"run_dir": str(result.prune.path), "metrics": result.prune.summary}
    if result.lottery_report is not None:
        lines += _describe_lottery(result.lottery_report)
        payload["lottery"] = {"run_dir": str(result.lottery_report.path), "rows": result.lottery_report.rows}
    if result.comparison is not None:
        lines += _describe_comparison(result.comparison)
        payload["comparison"] = {"run_dir": str(result.comparison.path), "rows": result.comparison.rows}
    if result.sweep is not None:
        lines += _describe_sweep(result.sweep)
        payload["sweep"] = {"run_dir": str(result.sweep.path), "rows": result.sweep.rows}
    if result.structured is not None:
        lines += _describe_structured(result.structured)
        payload["structured"] = {"run_dir": str(result.structured.path) if result.structured.path else None,
                                 "rows": result.structured.rows, "skipped": result.structured.skipped}
        if result.structured.earlybird is not None:
            payload["earlybird"] = _earlybird_payload(result.structured.earlybird)
    return lines, payload


def _describe_structured(experiment: Any) -> list[str]:
    lines = _describe_earlybird(experiment.earlybird) if experiment.earlybird is not None else []
    if not experiment.rows:
        return lines + [f"  {note}" for note in experiment.skipped]
    lines += [f"structured pruning, shrunk and retrained (dense test acc {experiment.rows[0]['dense_test_acc']:.4f}; "
              "test acc at the best validation step):",
              f"  {'at':<10} {'epoch':>6} {'ratio':>5} {'retrain':<8} {'from':<11} {'params':>11} {'kept':>6} "
              f"{'MACs':>7} {'latency':>7} {'pruned':>7} {'retrained':>9}"]
    for row in experiment.rows:
        lines.append(f"  {row['at']:<10} {row['epoch']:>6.3g} {row['ratio']:>5g} {row['mode']:<8} {row['start']:<11} "
                     f"{row['params_small']:>11,} {100 * row['params_small'] / row['params_dense']:>5.1f}% "
                     f"{row['macs_dense'] / row['macs_small']:>6.2f}x "
                     f"{row['latency_b64_dense_ms'] / row['latency_b64_small_ms']:>6.2f}x "
                     f"{row['pruned_test_acc']:>7.4f} {row['retrained_test_acc']:>9.4f}")
    lines.append("  (kept: parameters of the dense network kept; MACs, latency: how many times fewer / faster, "
                 "CPU batch 64; pruned: the shrunk network before retraining)")
    lines += [f"  {note}" for note in experiment.skipped]
    lines.append(f"  table and plot: {experiment.path}")
    return lines


def cmd_prune(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.sparsity.prune import prune
    from ticketlab.training.stage import find_train_run

    runtime = runtime_from_args(args)
    cfg = config_from_args(args, PruneConfig)
    result = prune(find_train_run(args.run, runtime.runs_dir), cfg, runtime)
    return _describe_prune(result), {"run_dir": str(result.path), "cached": result.cached, "metrics": result.summary}


def _describe_prune(result: Any) -> list[str]:
    summary, cfg = result.summary, result.config
    masked, dense = summary["masked"], summary["dense"]
    return [
        f"{'finished earlier: ' if result.cached else ''}pruned {100 * summary['sparsity']:.2f}% of "
        f"{summary['total']:,} entries of {result.train.run.name} by {cfg.criterion} ({cfg.scope}, scores at {cfg.at})",
        *("  " + line for line in result.run.file("report.txt").read_text().splitlines()),
        *(["  units kept: " + ", ".join(f"{g} {c['kept']}/{c['total']}" for g, c in summary["units"].items())]
          if "units" in summary else []),
        f"  masked, no retraining: val acc {masked['val_acc']:.4f}, test acc {masked['test_acc']:.4f} "
        f"(dense at {cfg.at}: val acc {dense['val_acc']:.4f}, test acc {dense['test_acc']:.4f})",
        f"  run: {result.path}",
    ]


def _describe_sweep(result: Any) -> list[str]:
    lines = [f"{'finished earlier: ' if result.cached else ''}sweep without retraining "
             f"(dense test acc {result.dense_test_acc:.4f}); test accuracy by k:",
             f"  {'k':>6} {'weight':>8} {'unit':>8}"]
    by_k: dict[float, dict[str, float]] = {}
    for row in result.rows:
        by_k.setdefault(float(row["k"]), {})[row["method"]] = float(row["test_acc"])
    lines += [f"  {k:>6g} {acc.get('weight', float('nan')):>8.4f} {acc.get('unit', float('nan')):>8.4f}"
              for k, acc in by_k.items()]
    lines.append(f"  table, plot, histograms: {result.path}")
    return lines


def cmd_sweep(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.analysis.sweep import sweep
    from ticketlab.training.stage import find_train_run

    runtime = runtime_from_args(args)
    result = sweep(find_train_run(args.run, runtime.runs_dir), [k for k in args.ks.split(",") if k.strip()],
                   step=args.step, runtime=runtime)
    return _describe_sweep(result), {"run_dir": str(result.path), "cached": result.cached, "rows": result.rows}


def _mean_std(mean: float, std: float, n: int, digits: int = 4) -> str:
    """`mean ± std`, or the mean alone for one replicate (its std is no measurement)."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def _describe_comparison(comparison: Any) -> list[str]:
    searched = any(row.get("search_score_mean") is not None for row in comparison.rows)
    lines = ["masks compared (test accuracy, mean ± std over replicates"
             + ("; objective: the best validation score each method found, and the evaluations it spent" if searched
                else "") + "):",
             f"  {'method':<18} {'sparsity':>8} {'rewind acc':>17} {'trained acc':>17}"
             + (f" {'objective':>17} {'evals':>6}" if searched else "")]
    for row in comparison.rows:
        line = (f"  {row['method']:<18} {row['sparsity']:>8g} "
                f"{_mean_std(row['rewind_acc_mean'], row['rewind_acc_std'], row['n']):>17} "
                f"{_mean_std(row['trained_acc_mean'], row['trained_acc_std'], row['n']):>17}")
        if searched:
            score = row.get("search_score_mean")
            score = "—" if score is None else _mean_std(score, row["search_score_std"], row["n"])
            line += f" {score:>17} {row['evaluations']:>6}"
        lines.append(line)
    lines.append(f"  table{', best score vs evaluations' if searched else ''}: {comparison.path}")
    return lines


def _describe_lottery(report: Any) -> list[str]:
    lines = ["lottery (test accuracy at the early-stop step, mean ± std over replicates):",
             f"  {'procedure':<17} {'level':>5} {'remaining':>9} {'test acc':>17} {'early stop (it)':>19}"]
    for row in report.rows:
        lines.append(f"  {row['procedure']:<17} {row['level']:>5} {row['remaining_pct']:>8.1f}% "
                     f"{_mean_std(row['test_acc_mean'], row['test_acc_std'], row['n']):>17} "
                     f"{_mean_std(row['early_stop_mean'], row['early_stop_std'], row['n'], 0):>19}")
    lines.append(f"  table and plot: {report.path}")
    return lines


def cmd_lottery(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.lottery.experiment import run_lottery
    from ticketlab.report.lottery import write_report
    from ticketlab.sparsity.schedules import round_rate

    cfg = config_from_args(args, LotteryConfig)
    if args.target_sparsity is not None:
        if cfg.rate != LotteryConfig.rate:
            raise TicketlabError("give either --rate or --target-sparsity, not both")
        cfg = dataclasses.replace(cfg, rate=round_rate(args.target_sparsity, cfg.levels))
    runtime = runtime_from_args(args)
    experiment = run_lottery(
        *training_from_args(args), cfg, runtime, replicates=args.replicates, controls=[c for c in args.controls.split(",") if c],
        control_levels=[int(v) for v in args.control_levels.split(",") if v] or None)
    report = write_report(experiment, runtime)
    return _describe_lottery(report), {"run_dir": str(report.path), "rows": report.rows}


def _validation_sizes(args: argparse.Namespace, cfg: SearchConfig, runtime: Runtime) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.analysis.valsize import validation_size_effect
    from ticketlab.training.stage import find_train_run

    sizes = [None if size.strip() == "all" else coerce(size, int, "--val-sizes") for size in args.val_sizes.split(",")]
    effect = validation_size_effect(find_train_run(args.run, runtime.runs_dir), cfg, sizes, runtime)
    lines = [f"{cfg.method} search by size of its objective subset (accuracy; test is reported, not selected on):",
             f"  {'images':>7} {'search':>8} {'rest of val':>11} {'test':>8} {'gap':>8}"]
    for row in effect.rows:
        rest = f"{row['val_rest_acc']:.4f}" if row["val_rest_acc"] is not None else "-"
        lines.append(f"  {row['val_size']:>7} {row['search_score']:>8.4f} {rest:>11} {row['test_acc']:>8.4f} "
                     f"{row['gap_to_test']:>8.4f}")
    lines.append(f"  table and plot: {effect.path}")
    return lines, {"run_dir": str(effect.path), "rows": effect.rows}


def cmd_search(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.search.stage import search
    from ticketlab.training.stage import find_train_run

    runtime = runtime_from_args(args)
    cfg = config_from_args(args, SearchConfig, method=args.method)
    if args.val_sizes:
        return _validation_sizes(args, cfg, runtime)
    result = search(find_train_run(args.run, runtime.runs_dir), cfg, runtime)
    summary = result.summary
    best, held = summary["best"], summary["best"]["held_out"]
    rest = f"rest of validation {held['val_rest']['accuracy']:.4f}, " if held.get("val_rest") else ""
    lines = [
        f"{'finished earlier: ' if result.cached else ''}{cfg.method} search ({cfg.mode}) over {summary['units']:,} "
        f"{cfg.granularity} units at {cfg.at}, sparsity {summary['sparsity']:.4f}: {summary['evaluations']} "
        f"evaluations ({summary['evaluations_per_s']} per s)",
        f"  best {cfg.metric} on the {summary['objective_images']} search images: {best['score']:.4f} "
        f"(start {summary['start_score']:.4f})",
        f"  best mask's accuracy: {rest}test {held['test']['accuracy']:.4f} (reported, not selected on)",
        f"  mask, history, plot: {result.path}",
    ]
    return lines, {"run_dir": str(result.path), "cached": result.cached, "metrics": summary}


def cmd_shrink(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.structure.retrain import retrain_small
    from ticketlab.structure.saving import export_onnx, load
    from ticketlab.structure.stage import find_mask_run, shrink_run

    runtime = runtime_from_args(args)
    result = shrink_run(find_mask_run(args.run, runtime.runs_dir), runtime, step=args.step, backend=args.backend)
    summary = result.summary
    params, macs, latency, speedup = summary["parameters"], summary["macs"], summary["latency_ms"], summary["speedup"]
    lines = [
        f"{'finished earlier: ' if result.cached else ''}shrank {summary['train']} at {summary['step']} by "
        f"{summary['source']}{' with torch-pruning' if args.backend == 'torch-pruning' else ''}: "
        + ", ".join(f"{g} {c['kept']}/{c['total']}" for g, c in summary["units"].items()),
        f"  parameters {params['dense']:,} -> {params['small']:,}; MACs {macs['dense']:,} -> {macs['small']:,} "
        f"({speedup['macs']:.2f}x fewer)",
        f"  CPU latency, batch 1: {latency['dense']['batch_1']:.2f} -> {latency['small']['batch_1']:.2f} ms; "
        f"batch 64: {latency['dense']['batch_64']:.2f} -> {latency['small']['batch_64']:.2f} ms "
        f"({speedup['latency_batch_64']:.2f}x)",
        f"  equals the masked network (max difference {summary['max_difference']:.2e}); "
        f"val acc {summary['metrics']['val_acc']:.4f}, test acc {summary['metrics']['test_acc']:.4f}",
        f"  model: {result.model_file} (ticketlab.load(path) reloads it)",
    ]
    if args.onnx:
        small = load(result.model_file)
        export_onnx(small, result.run.file("model.onnx"), small.input_shape)
        lines.append(f"  ONNX: {result.run.file('model.onnx')}")
    payload = {"run_dir": str(result.path), "cached": result.cached, "metrics": summary}
    if args.retrain:
        retrained = retrain_small(result, args.retrain, runtime, rewind=args.rewind)
        best = retrained.summary["best"]
        lines.append(f"  retrained ({args.retrain}{f' from {args.rewind}' if args.retrain == 'rewind' else ''}): "
                     f"best step {best['step']}, val acc {best['val_acc']:.4f}, test acc {best['test_acc']:.4f}; "
                     f"{retrained.path}")
        payload["retrained"] = {"run_dir": str(retrained.path), "metrics": retrained.summary}
    return lines, payload


def cmd_earlybird(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.structure.earlybird import earlybird

    ratios = [coerce(r, float, "--ratios") for r in args.ratios.split(",") if r.strip()]
    result = earlybird(*training_from_args(args), ratios, runtime_from_args(args), criterion=args.criterion,
                       threshold=args.threshold, stop=args.stop)
    return _describe_earlybird(result), _earlybird_payload(result)


def _describe_earlybird(result: Any) -> list[str]:
    settings = result.run.identity["earlybird"]
    lines = [f"{'finished earlier: ' if result.cached else ''}early-bird tickets by {settings['criterion']} "
             f"(distance < {settings['threshold']} to each of the 4 previous epochs' masks), "
             f"{result.total_epochs} epochs:"]
    for ratio, epoch in result.found.items():
        lines.append(f"  pruning ratio {ratio:g}: " + (f"found at epoch {epoch} ({100 * result.cost[ratio]:.0f}% of "
                                                         "training)" if epoch is not None else "not found"))
    stopped = result.summary.get("stopped_early_at")
    if stopped is not None:
        lines.append(f"  training stopped at epoch {stopped}")
    lines.append(f"  heatmaps, tickets' checkpoints: {result.path}")
    return lines


def _earlybird_payload(result: Any) -> dict[str, Any]:
    return {"run_dir": str(result.path), "cached": result.cached,
            "found": {str(r): e for r, e in result.found.items()}, "metrics": result.summary}


def cmd_criteria(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.sparsity.criteria import CRITERIA

    rows = {name: {"structured": c.structured, "needs_data": c.needs_data, "needs_init": c.needs_init,
                   "description": (type(c).__doc__ or "").strip().splitlines()[0]} for name, c in CRITERIA.items()}
    lines = [f"{name:<20} {'units' if row['structured'] else 'weights':<8} {row['description']}"
             for name, row in rows.items()]
    return lines, {"criteria": rows}


def _describe_run(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """What a run is, in a few words, and the metrics that summarise it (val_acc, test_acc)."""
    kind, hparams, summary = row["kind"], row["hparams"], row["summary"]
    identity = hparams.get("identity", {})
    if kind == "train":
        return (f"{hparams['model']['name']} on {hparams['data']['name']}, {hparams['train']['steps']}",
                summary.get("best", {}))
    if kind == "prune":
        cfg = hparams["prune"]
        return f"{cfg['criterion']} {cfg['sparsity']:.3g} of {hparams['train']}", summary.get("masked", {})
    if kind in ("level", "control", "ticket"):
        what = {"level": lambda: f"level {identity.get('level')} of {identity.get('dense')}",
                "control": lambda: f"{identity.get('control')} of {identity.get('level')}",
                "ticket": lambda: f"retrained {identity.get('mask')}"}[kind]()
        return what, summary.get("best", {})
    if kind == "search":
        cfg = hparams["search"]
        held = summary.get("best", {}).get("held_out", {})
        rest, test = held.get("val_rest") or {}, held.get("test") or {}
        return (f"{cfg['method']} {cfg['sparsity']:.3g} of {hparams['train']}",
                {"val_acc": rest.get("accuracy", float("nan")), "test_acc": test.get("accuracy", float("nan"))})
    return ", ".join(f"{k}={v}" for k, v in identity.items()), {}


def cmd_runs(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.store import list_runs, runs_root

    rows = list_runs(args.runs_dir)
    if not rows:
        return [f"no runs under {runs_root(args.runs_dir)}"], {"runs": []}
    lines = [f"{'run':<20} {'status':<12} {'what':<46} {'val acc':>8} {'test acc':>8}"]
    for row in rows:
        what, metrics = _describe_run(row)
        lines.append(f"{row['name']:<20} {row['status']:<12} {what[:46]:<46} "
                     f"{metrics.get('val_acc', float('nan')):>8.4f} {metrics.get('test_acc', float('nan')):>8.4f}")
    lines.append("(trainings: at the best step by validation; prune: the masked network before retraining; "
                 "search: the best mask on the rest of validation)")
    return lines, {"runs": [{k: row[k] for k in ("name", "path", "kind", "status", "summary")} for row in rows]}


def cmd_presets(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.presets import load_preset, preset_names

    presets = [load_preset(name) for name in preset_names()]
    return ([f"{p.name:<16} {p.description}" for p in presets],
            {"presets": {p.name: p.description for p in presets}})


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="ticketlab", formatter_class=formatter,
                                     description="Find lottery tickets: sparse subnetworks that train as well as "
                                                 "their dense parent.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a dense network (cached by its hyperparameters)",
                                formatter_class=formatter)
    add_training_flags(train)
    add_runtime_flags(train)
    train.set_defaults(handler=cmd_train)

    run = commands.add_parser("run", help="run a named experiment (preset) or a YAML file",
                              formatter_class=formatter)
    run.add_argument("preset", nargs="?", default="quickstart", help="preset name or FILE.yaml")
    run.add_argument("--smoke", action="store_true", help="the preset's smoke variant: tiny generated data, few steps")
    add_runtime_flags(run)
    run.set_defaults(handler=cmd_run)

    lottery = commands.add_parser("lottery", help="iterative pruning with rewinding (lottery tickets), with controls",
                                  formatter_class=formatter)
    add_training_flags(lottery, "training (dense level 0 and every retraining)")
    add_config_flags(lottery, LotteryConfig, "lottery")
    lottery.add_argument("--target-sparsity", type=float, default=None,
                         help="reach this sparsity at the last level: sets --rate to 1-(1-s)^(1/levels)")
    lottery.add_argument("--replicates", type=int, default=1, help="seeds: --seed, --seed+1, ...")
    lottery.add_argument("--controls", default="",
                         help="comma-separated: reinit, random_mask, reinit_survivors, finetune, scratch")
    lottery.add_argument("--control-levels", default="", help="levels to run controls on (default: all)")
    add_runtime_flags(lottery)
    lottery.set_defaults(handler=cmd_lottery)

    prune = commands.add_parser("prune", help="score a trained run's weights and save a mask (cached)",
                                formatter_class=formatter)
    add_run_flag(prune)
    add_config_flags(prune, PruneConfig, "pruning")
    add_runtime_flags(prune)
    prune.set_defaults(handler=cmd_prune)

    sweep = commands.add_parser("sweep", help="accuracy of a trained run under weight and unit pruning, no retraining",
                                formatter_class=formatter)
    add_run_flag(sweep)
    sweep.add_argument("--ks", default="0,.25,.5,.6,.7,.8,.9,.95,.97,.99,.995,.999",
                       help="comma-separated fractions pruned per layer")
    sweep.add_argument("--step", default="best", help="checkpoint to prune: best, final or a saved step")
    add_runtime_flags(sweep)
    sweep.set_defaults(handler=cmd_sweep)

    search = commands.add_parser("search", help="search a mask: simulated annealing, REINFORCE, or random / greedy "
                                 "baselines", formatter_class=formatter)
    search.add_argument("method", choices=["anneal", "random", "greedy", "reinforce"], help="search method")
    add_run_flag(search)
    add_config_flags(search, SearchConfig, "search", skip=("method",))
    search.add_argument("--val-sizes", default="",
                        help="run one search per objective size, e.g. 512,2048,8192,all, and tabulate the overfitting gap")
    add_runtime_flags(search)
    search.set_defaults(handler=cmd_search)

    early = commands.add_parser("earlybird", help="train and detect early-bird tickets (stable channel masks)",
                                formatter_class=formatter)
    add_training_flags(early)
    early.add_argument("--ratios", default="0.3,0.5,0.7", help="channel pruning ratios to detect tickets for")
    early.add_argument("--criterion", default="bn_scale", help="structured criterion that draws the channel masks")
    early.add_argument("--threshold", type=float, default=0.1, help="normalised Hamming distance that counts as stable")
    early.add_argument("--stop", action="store_true", help="stop training once every ratio has its ticket")
    add_runtime_flags(early)
    early.set_defaults(handler=cmd_earlybird)

    shrink = commands.add_parser("shrink", help="physically remove the units a structured mask prunes (cached)",
                                 formatter_class=formatter)
    add_run_flag(shrink, "the structured prune or filter search run: its directory or name")
    shrink.add_argument("--step", default="final", help="checkpoint of the training run whose weights are shrunk")
    shrink.add_argument("--onnx", action="store_true", help="also export the small model to ONNX")
    shrink.add_argument("--retrain", choices=["finetune", "rewind", "scratch"], default=None,
                        help="then train the small network: from its copied weights (finetune), from the dense "
                             "run's weights at --rewind (rewind), or from a fresh init (scratch)")
    shrink.add_argument("--rewind", default="0it", help="step the rewind retraining starts from")
    shrink.add_argument("--backend", choices=["ticketlab", "torch-pruning"], default="ticketlab",
                        help="who cuts the units out: ticketlab's own surgery, or the optional torch-pruning "
                             "package (pip install 'ticketlab[pruning]'), a cross-check; both are checked "
                             "against the masked network")
    add_runtime_flags(shrink)
    shrink.set_defaults(handler=cmd_shrink)

    criteria = commands.add_parser("criteria", help="list the pruning criteria", formatter_class=formatter)
    add_output_flags(criteria)
    criteria.set_defaults(handler=cmd_criteria)

    runs = commands.add_parser("runs", help="list runs with their status and key metrics",
                               formatter_class=formatter)
    runs.add_argument("--runs-dir", default=None, help=Runtime.__dataclass_fields__["runs_dir"].metadata["help"])
    add_output_flags(runs)
    runs.set_defaults(handler=cmd_runs)

    presets = commands.add_parser("presets", help="list the built-in presets", formatter_class=formatter)
    add_output_flags(presets)
    presets.set_defaults(handler=cmd_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `ticketlab runs | head` ends quietly
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], tuple[list[str], dict[str, Any]]] = args.handler
    try:
        lines, payload = handler(args)
    except TicketlabError as exc:
        print(f"ticketlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ticketlab: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print("\n".join(lines))
    if args.json:
        print(json.dumps({"command": args.command, **payload}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
