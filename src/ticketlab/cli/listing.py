"""Commands that list what there is: `runs`, `criteria`, `models`."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ticketlab.cli.flags import Result, add_output_flags
from ticketlab.config import Runtime, TicketlabError


def cmd_criteria(args: argparse.Namespace) -> Result:
    from ticketlab.sparsity.criteria import CRITERIA

    rows = {name: {"structured": c.structured, "needs_data": c.needs_data, "needs_init": c.needs_init,
                   "description": c.description} for name, c in CRITERIA.items()}
    lines = [f"{'criterion':<20} {'scores':<8} {'needs':<10} description"]
    lines += [f"{name:<20} {'units' if row['structured'] else 'weights':<8} "
              f"{'data' if row['needs_data'] else 'init' if row['needs_init'] else '-':<10} {row['description']}"
              for name, row in rows.items()]
    return lines, {"criteria": rows}


# The input shapes `ticketlab models` checks each model on, and which data sets have them.
SHAPES = {(1, 28, 28): "mnist, fashion, mnist5k", (3, 32, 32): "cifar10", (1, 8, 8): "digits"}


def cmd_models(args: argparse.Namespace) -> Result:
    from ticketlab.models.registry import model_facts, model_names

    rows = {}
    for name in model_names():
        facts = {shape: model_facts(name, shape, 10) for shape in SHAPES}
        fitting = [shape for shape, fact in facts.items() if fact is not None]
        first = facts[fitting[0]] if fitting else {"parameters": 0, "groups": {}, "prunable": 0}
        rows[name] = {"parameters": {"x".join(map(str, shape)): facts[shape]["parameters"] for shape in fitting},
                      "datasets": ", ".join(SHAPES[shape] for shape in fitting),
                      "prunable_layers": first["prunable"], "groups": first["groups"]}
    lines = [f"{'model':<14} {'parameters (28x28)':>18} {'prunable':>8} {'groups':>6}  fits"]
    for name, row in rows.items():
        params = row["parameters"].get("1x28x28")
        lines.append(f"{name:<14} {f'{params:,}' if params else '-':>18} {row['prunable_layers']:>8} "
                     f"{len(row['groups']):>6}  {row['datasets']}")
    lines.append("(prunable: Linear/Conv weights; groups: the channel groups structured pruning removes units of, "
                 "residual streams counted once; `ticketlab models --json` lists them)")
    return lines, {"models": rows}


def _metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def cmd_runs(args: argparse.Namespace) -> Result:
    from ticketlab.stage import describe, import_stage_kinds
    from ticketlab.store import list_runs, runs_root

    import_stage_kinds()
    rows = list_runs(args.runs_dir)
    if not rows:
        return [f"no runs under {runs_root(args.runs_dir)}"], {"runs": []}
    lines = [f"{'run':<20} {'status':<11} {'what':<56} {'val acc':>8} {'test acc':>8}"]
    for row in rows:
        row["what"], row["metrics"] = describe(row)
        what = row["what"] if len(row["what"]) <= 56 else row["what"][:55] + "…"
        lines.append(f"{row['name']:<20} {row['status']:<11} {what:<56} "
                     f"{_metric(row['metrics'].get('val_acc')):>8} {_metric(row['metrics'].get('test_acc')):>8}")
    lines.append("(trainings: at the best step by validation; prune: the masked network before retraining; "
                 "search: the best mask on the rest of validation; reports: see their tables)")
    return lines, {"runs": [{k: row[k] for k in ("name", "path", "kind", "status", "what", "metrics", "summary")}
                            for row in rows]}


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def cmd_cache(args: argparse.Namespace) -> Result:
    from ticketlab.data.cache import cache_entries, clear_cache
    from ticketlab.data.load import data_cache

    base = data_cache(args.cache_dir)
    if args.action == "clear":
        freed = clear_cache(base, downloads=args.downloads)
        what = "parsed copies and downloads" if args.downloads else "parsed copies (downloads kept: --downloads)"
        return [f"cleared {what} from {base}: {_megabytes(freed)} freed"], {"cache": {"path": str(base),
                                                                                    "freed_bytes": freed}}
    if args.downloads:
        raise TicketlabError("--downloads is for `ticketlab cache clear`")
    entries = cache_entries(base)
    lines = [f"cache {base}: {_megabytes(entries['bytes'])}"]
    for copy in entries["parsed"]:
        seen = "; ".join(f"{s['dataset']}: {s['source']}" for s in copy["sources"]) or "no source recorded"
        size = _megabytes(copy["bytes"])
        lines.append(f"  parsed {copy['content'][:12]}  {size:>9}  used {copy['last_used']}  {seen}")
    for name, size in entries["downloads"].items():
        lines.append(f"  downloads of {name}: {_megabytes(size)}")
    if entries["legacy_parsed"]:
        lines.append(f"  {len(entries['legacy_parsed'])} parsed files of an earlier version (`ticketlab cache clear`)")
    return lines, {"cache": entries}


def register(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    runs = commands.add_parser("runs", help="list runs with their status and key metrics",
                               formatter_class=formatter)
    runs.add_argument("--runs-dir", default=None, help=Runtime.__dataclass_fields__["runs_dir"].metadata["help"])
    add_output_flags(runs)
    runs.set_defaults(handler=cmd_runs)

    criteria = commands.add_parser("criteria", help="list the pruning criteria", formatter_class=formatter)
    add_output_flags(criteria)
    criteria.set_defaults(handler=cmd_criteria)

    models = commands.add_parser("models", help="list the zoo's models: parameters, inputs, structured groups",
                                 formatter_class=formatter)
    add_output_flags(models)
    models.set_defaults(handler=cmd_models)

    cache = commands.add_parser("cache", help="the data cache: its parsed copies and downloads (list), or clear it",
                                formatter_class=formatter)
    cache.add_argument("action", nargs="?", choices=("list", "clear"), default="list")
    cache.add_argument("--cache-dir", default=None, help=Runtime.__dataclass_fields__["cache_dir"].metadata["help"])
    cache.add_argument("--downloads", action="store_true", help="clear: remove the downloaded files too")
    add_output_flags(cache)
    cache.set_defaults(handler=cmd_cache)
