"""Commands for research on the method: ablate."""
from __future__ import annotations

import argparse


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="run an ablation study (variants x seeds) and report it",
                       description="Train and test every variant of a study file with every seed "
                                   "(one recipe, one dataset; the synthetic benchmark is "
                                   "generated if missing), in parallel where cores allow, and "
                                   "write report.md, results.csv, summary.csv and ablation.png. "
                                   "Finished runs are kept; interrupted ones resume.")
    p.add_argument("study", nargs="?", default=None,
                   help="study YAML file or shipped study name (see --list), e.g. branches")
    p.add_argument("--out", default=None,
                   help="study directory (default: the study's output, or runs/ablate/NAME)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at a time (default: cores / (train.threads + train.workers))")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="use these seeds instead of the study's, e.g. --seeds 0")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state only")
    p.add_argument("--list", action="store_true", help="list the shipped studies")
    p.set_defaults(func=_cmd_ablate)


def _cmd_ablate(args: argparse.Namespace) -> int:
    import sys

    from tanet.apps.ablate import find_study, list_studies, run_study

    if args.list or args.study is None:
        for name in list_studies():
            first = find_study(name).read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
            print(f"{name:<14} {first}")
        return 0 if args.list else 2
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    s = run_study(args.study, args.out, jobs=args.jobs, seeds=args.seeds, dry_run=args.dry_run,
                  quiet=args.quiet)
    if args.dry_run:
        return 0
    if not args.quiet:
        print(open(s["report"], encoding="utf-8").read())
    print(f"report: {s['report']} ({s['ran']} run(s) now, {s['kept']} kept)")
    if s["failed"]:
        print(f"error: {len(s['failed'])} run(s) failed (error.txt in each folder); "
              "re-run the command to retry them", file=sys.stderr)
        return 1
    return 0


COMMANDS = [_add_ablate]
