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
from iterators.runtime import reuse_freed_memory
from iterators.search_space import describe, resolution_flag
from models.checkpoints import load_predictor
from models.plots import ensure_dir, plot_unit_scores
from models.unit_scores import score_units


def main(argv=None) -> str:
    p = ArgumentParser(__doc__)
    p.add_argument("-chkpt", required=True, help="<name>_predictor.pt (the toolkit's or a published one)")
    p.add_argument("-resolution", type=resolution_flag, default=224)
    p.add_argument("-out_dir", default="units")
    p.add_argument("-top", type=int, default=10, help="units listed per stage, best and worst")
    p.add_argument("-quiet", action="store_true")
    args = p.parse_args(argv)
    reuse_freed_memory()
    resolution = args.resolution
    check_output_dir(args.out_dir, "-out_dir")
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

    ensure_dir(args.out_dir)
    name = os.path.basename(args.chkpt)[:-len("_predictor.pt")]
    out = os.path.join(args.out_dir, f"{name}_labeled_sgs.json")
    with open(out + ".tmp", "w") as f:
        json.dump(units, f)
    os.replace(out + ".tmp", out)
    plot = plot_unit_scores(units, config["target"], os.path.join(args.out_dir, f"{name}_unit_scores.png"))
    print(f"\nwrote {out} and {plot}")
    return out


if __name__ == "__main__":
    run_cli(main)
