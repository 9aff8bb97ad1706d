"""Commands that make and use masks: `prune`, `sweep`, `search`, `shrink`, `export`."""

from __future__ import annotations

import argparse
from typing import Any

from ticketlab import paths
from ticketlab.cli.flags import (Result, add_config_flags, add_run_flag, add_runtime_flags, config_from_args,
                                runtime_from_args)
from ticketlab.cli.report import figures_hint
from ticketlab.config import PruneConfig, Runtime, SearchConfig, coerce
from ticketlab.search.searchers import SEARCHERS, option_sections


def cmd_prune(args: argparse.Namespace) -> Result:
    from ticketlab.experiments.sections.prune import describe_prune
    from ticketlab.sparsity.prune import prune
    from ticketlab.training.stage import find_train_run

    runtime = runtime_from_args(args)
    cfg = config_from_args(args, PruneConfig)
    result = prune(find_train_run(args.run, runtime.runs_dir), cfg, runtime)
    return describe_prune(result), {"run_dir": str(result.path), "cached": result.cached, "metrics": result.summary}


def cmd_sweep(args: argparse.Namespace) -> Result:
    from ticketlab.analysis.sweep import sweep
    from ticketlab.experiments.sections.sweep import describe_sweep
    from ticketlab.training.stage import find_train_run

    runtime = runtime_from_args(args)
    result = sweep(find_train_run(args.run, runtime.runs_dir), [k for k in args.ks.split(",") if k.strip()],
                   step=args.step, runtime=runtime)
    return describe_sweep(result) + [figures_hint(result.run.name, runtime)], {"run_dir": str(result.path), "cached": result.cached, "rows": result.rows}


def _validation_sizes(args: argparse.Namespace, cfg: SearchConfig, runtime: Runtime) -> Result:
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
    lines += [f"  table: {effect.path}", figures_hint(effect.run.name, runtime)]
    return lines, {"run_dir": str(effect.path), "rows": effect.rows}


def cmd_search(args: argparse.Namespace) -> Result:
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
        f"  mask, history: {result.path}",
        figures_hint(result.run.name, runtime),
    ]
    return lines, {"run_dir": str(result.path), "cached": result.cached, "metrics": summary}


def cmd_shrink(args: argparse.Namespace) -> Result:
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
        export_onnx(small, result.run.file(paths.ONNX), small.input_shape)
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


def cmd_export(args: argparse.Namespace) -> Result:
    from ticketlab.lottery.export import export_ticket

    runtime = runtime_from_args(args)
    written = export_ticket(args.run, args.output, runtime.runs_dir, step=args.step)
    share = 100 * written["kept"] / written["total"]
    kept = f"{written['kept']:,} of {written['total']:,} masked weights kept ({share:.1f}%)"
    use = "ticketlab.load(path) runs it, on sparse kernels where faster" if written["format"] == "sparse" else \
        "the dense network, pruned weights zero"
    return [f"wrote {written['run']} at {written['step']} to {written['path']} ({written['bytes']:,} bytes): {kept}; "
            f"{use}"], written


def register(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
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
    search.add_argument("method", choices=list(SEARCHERS), help="search method")
    add_run_flag(search)
    add_config_flags(search, SearchConfig, "search", skip=("method",), sections=option_sections())
    search.add_argument("--val-sizes", default="",
                        help="run one search per objective size, e.g. 512,2048,8192,all, and tabulate the overfitting gap")
    add_runtime_flags(search)
    search.set_defaults(handler=cmd_search)

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

    export = commands.add_parser("export", help="write a retrained ticket to a file: its kept weights in CSR form "
                                 "(.safetensors, reloaded by ticketlab.load on sparse kernels) or ONNX (.onnx)",
                                 formatter_class=formatter)
    add_run_flag(export, "the retrained run (a lottery level, a control, a comparison's ticket): its directory or name")
    export.add_argument("--step", default="best", help="checkpoint to write: best (by validation), final, ...")
    export.add_argument("-o", "--output", required=True, help="file to write: NAME.safetensors or NAME.onnx")
    add_runtime_flags(export)
    export.set_defaults(handler=cmd_export)
