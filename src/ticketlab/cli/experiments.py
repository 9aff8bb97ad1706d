"""Commands for named experiments: `run` (a preset or a YAML file) and `presets`."""

from __future__ import annotations

import argparse
from typing import Any

from ticketlab.cli.flags import Result, add_output_flags, add_runtime_flags, mean_std, runtime_from_args, typed
from ticketlab.cli.pruning import describe_prune, describe_sweep
from ticketlab.cli.training import describe_earlybird, describe_lottery, describe_training, earlybird_payload


def cmd_run(args: argparse.Namespace) -> Result:
    from ticketlab.experiments.preset import run_preset
    from ticketlab.presets import load_preset

    preset = load_preset(args.preset)
    result = run_preset(preset.smoked() if args.smoke else preset, runtime_from_args(args), workers=args.workers)
    lines, payload = describe_training(result.train)
    title = f"preset {result.preset.name}" + (f": {result.preset.description}" if result.preset.description else
                                               f" ({args.preset})")
    lines = [title, *([result.data_note] if result.data_note else []), *lines]
    payload = {"preset": result.preset.name, "data_note": result.data_note, **payload}
    # Each section the preset ran: its lines, and its JSON under its key (a prune's summary, else its table).
    sections = (("prune", result.prune, describe_prune), ("lottery", result.lottery_report, describe_lottery),
                ("comparison", result.comparison, describe_comparison), ("sweep", result.sweep, describe_sweep))
    for key, section, describe in sections:
        if section is not None:
            lines += describe(section)
            payload[key] = {"run_dir": str(section.path),
                            **({"metrics": section.summary} if key == "prune" else {"rows": section.rows})}
    if result.structured is not None:
        lines += describe_structured(result.structured)
        payload["structured"] = {"run_dir": str(result.structured.path) if result.structured.path else None,
                                 "rows": result.structured.rows, "skipped": result.structured.skipped}
        if result.structured.earlybird is not None:
            payload["earlybird"] = earlybird_payload(result.structured.earlybird)
    return lines, payload


def describe_structured(experiment: Any) -> list[str]:
    lines = describe_earlybird(experiment.earlybird) if experiment.earlybird is not None else []
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


def describe_comparison(comparison: Any) -> list[str]:
    searched = any(row.get("search_score_mean") is not None for row in comparison.rows)
    lines = ["masks compared (test accuracy, mean ± std over replicates"
             + ("; objective: the best validation score each method found, and the evaluations it spent" if searched
                else "") + "):",
             f"  {'method':<18} {'sparsity':>8} {'rewind acc':>17} {'trained acc':>17}"
             + (f" {'objective':>17} {'evals':>6}" if searched else "")]
    for row in comparison.rows:
        line = (f"  {row['method']:<18} {row['sparsity']:>8g} "
                f"{mean_std(row['rewind_acc_mean'], row['rewind_acc_std'], row['n']):>17} "
                f"{mean_std(row['trained_acc_mean'], row['trained_acc_std'], row['n']):>17}")
        if searched:
            score = row.get("search_score_mean")
            score = "—" if score is None else mean_std(score, row["search_score_std"], row["n"])
            line += f" {score:>17} {row['evaluations']:>6}"
        lines.append(line)
    lines.append(f"  table{', best score vs evaluations' if searched else ''}: {comparison.path}")
    return lines


def cmd_presets(args: argparse.Namespace) -> Result:
    from ticketlab.presets import load_preset, preset_names

    presets = [load_preset(name) for name in preset_names()]
    return ([f"{p.name:<28} {p.description.splitlines()[0] if p.description else ''}" for p in presets],
            {"presets": {p.name: p.description for p in presets}})


def register(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    run = commands.add_parser("run", help="run a named experiment (preset) or a YAML file",
                              formatter_class=formatter)
    run.add_argument("preset", nargs="?", default="quickstart", help="preset name or FILE.yaml")
    run.add_argument("--smoke", action="store_true", help="the preset's smoke variant: tiny generated data, few steps")
    run.add_argument("--workers", type=typed(int, "--workers"), default=1,
                     help="worker processes for the stages that do not depend on each other (a comparison's "
                          "masks and tickets, a lottery's replicates and controls); workers × --threads must "
                          "fit the cores")
    add_runtime_flags(run)
    run.set_defaults(handler=cmd_run)

    presets = commands.add_parser("presets", help="list the built-in presets", formatter_class=formatter)
    add_output_flags(presets)
    presets.set_defaults(handler=cmd_presets)
