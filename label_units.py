"""Score every unit (module subgraph) of a predictor's search space: the ranking AutoBuild builds networks from.

    python label_units.py -chkpt saved_models/<name>_predictor.pt [-resolution 224]

Writes units/<name>_labeled_sgs.json (a list of {"unit", "config", "hops", "score"}), prints the 10 best and 10
worst units of every stage and saves a plot of the score distribution per stage.
"""
from __future__ import annotations

import json
import os
import time

from iterators.errors import ArgumentParser, check_output_dir, run_cli
from iterators.runtime import add_threads_flag, configure
from iterators.search_space import describe, resolution_flag


def main(argv=None) -> str:
    p = ArgumentParser(__doc__)
    p.add_argument("-chkpt", required=True, help="<name>_predictor.pt (the toolkit's or a published one)")
    p.add_argument("-resolution", type=resolution_flag, default=224)
    p.add_argument("-out_dir", default="units")
    p.add_argument("-top", type=int, default=10, help="units listed per stage, best and worst")
    p.add_argument("-quiet", action="store_true")
    add_threads_flag(p)
    args = p.parse_args(argv)
    configure(args.threads)
    check_output_dir(args.out_dir, "-out_dir")
    from models.checkpoints import load_predictor  # after the flags: --help answers at once
    from models.unit_scores import score_units
    resolution = args.resolution
    model, config = load_predictor(args.chkpt)
    if config.get("format", "custom") != "custom":
        p.error("units are scored with a predictor of the custom (sequence-graph) format")
    start = time.perf_counter()
    units = score_units(model, config["family"], resolution, config.get("norm", 1), progress=not args.quiet)
    seconds = time.perf_counter() - start
    print(f"scored {len(units)} units of {config['family']} at resolution {resolution} in {seconds:.2f}s "
          f"(target {config['target']!r})")

    for unit in sorted({u["unit"] for u in units}):
        ranked = sorted((u for u in units if u["unit"] == unit), key=lambda u: u["score"], reverse=True)
        print(f"\nunit {unit}: {len(ranked)} units, best {args.top} / worst {args.top}")
        for label, rows in (("best", ranked[:args.top]), ("worst", ranked[-args.top:])):
            for u in rows:
                print(f"  {label:<5} {u['score']:>12.5g}  {describe(u['config'])}")

    os.makedirs(args.out_dir, exist_ok=True)
    name = os.path.basename(args.chkpt)[:-len("_predictor.pt")]
    out = os.path.join(args.out_dir, f"{name}_labeled_sgs.json")
    with open(out + ".tmp", "w") as f:
        f.write(json.dumps(units))  # the C encoder: json.dump's chunked writes run in Python, 5x slower
    os.replace(out + ".tmp", out)
    from models.plots import plot_unit_scores
    plot = plot_unit_scores(units, config["target"], os.path.join(args.out_dir, f"{name}_unit_scores.png"))
    print(f"\nwrote {out} and {plot}")
    return out


if __name__ == "__main__":
    run_cli(main)
