"""Out-of-scope evidence, leave-one-dataset-out: every score candidate's AUROC on valid and
test, and the component's confidence at thresholds chosen on valid (and at the default).

    python scripts/oos_evidence.py --encoder CLINC150=runs/scorer/CLINC150 \
        --dataset CLINC150 --shots 5 10 full --output docs/results/out_of_scope/oos_evidence.json

Each dataset is scored with the encoder (and in-scope scorer) trained without it. Rows are
appended to --output, so datasets can be run one at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from research.oos import evaluate_task, oos_tasks  # noqa: E402

# In-scope accuracy floors of the targets: full data 95 %, few-shot 90 %.
TARGET_FLOORS = {"full": 0.95, "10": 0.90, "5": 0.90}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--encoder", required=True, help="DATASET=ENCODER_DIR")
    p.add_argument("--dataset", required=True)
    p.add_argument("--shots", nargs="+", default=["5", "10"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--epochs", nargs="+", type=int, default=[1],
                   help="Inner-loop epochs at `rasa train` (1: the default, 0: frozen).")
    p.add_argument("--calibrations", nargs="+", default=["leave_one_out"],
                   help="oos_calibration values to compare (leave_one_out: the default).")
    p.add_argument("--methods", nargs="+", default=["learned", "similarity"])
    p.add_argument("--default-threshold", type=float, default=0.4,
                   help="The FallbackClassifier threshold the README recommends.")
    p.add_argument("--cache-dir", default="runs/embeddings")
    p.add_argument("--raw-dir", default="runs/oos_raw",
                   help="Fitted heads and embeddings per task, for studying calibration rules.")
    p.add_argument("--output", required=True)
    ns = p.parse_args()
    dataset, _, encoder = ns.encoder.partition("=")
    assert dataset == ns.dataset, "--encoder must name the dataset it is evaluated on"
    out = Path(ns.output)
    rows = json.loads(out.read_text()) if out.is_file() else []
    jobs = [(t, e) for seed in ns.seeds for t in oos_tasks(ns.dataset, ns.shots, seed)
            for e in ns.epochs]
    for task, epochs in tqdm(jobs, desc=f"OOS {ns.dataset}"):
        floors = {f"in-scope >= {100 * TARGET_FLOORS[task.shots]:.0f}%":
                  TARGET_FLOORS[task.shots]} if task.shots in TARGET_FLOORS else {}
        # with a frozen encoder the examples' leave-one-out scores are already held out
        calibrations = ns.calibrations if epochs > 0 else ["leave_one_out"]
        new = evaluate_task(task, encoder, {"epochs": epochs}, ns.methods,
                            ns.default_threshold, floors, ns.cache_dir, calibrations,
                            f"{ns.raw_dir}/{task.dataset}_{task.oos.replace(' ', '-')}_"
                            f"{task.shots}_{task.seed}_e{epochs}.pt" if ns.raw_dir else None)
        for row in new:
            row["command"] = "python scripts/oos_evidence.py " + " ".join(sys.argv[1:])
            op = row["operating_points"]
            print(f"{task.dataset} {task.oos} {task.shots}-shot seed {task.seed} epochs {epochs} "
                  f"{row['config']['oos_calibration']} "
                  f"{row['in_scope_method']}: test AUROC {op['no fallback']['auroc']:.3f} | "
                  f"default t: in {op['default threshold']['in_scope_accuracy']:.3f} "
                  f"rec {op['default threshold']['oos_recall']:.3f} | no fallback in "
                  f"{op['no fallback']['in_scope_accuracy']:.3f} | valid best t "
                  f"{row['valid_best_threshold']:.2f}", flush=True)
        rows += new
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
