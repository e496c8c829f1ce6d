"""example_bot's held-out paraphrases and off-topic messages, with and without the inner loop.

Usage: python scripts/example_bot_check.py --epochs 0 1 \
           --out docs/results/example_bot/example_bot_inner_loop.json
       python scripts/example_bot_check.py --epochs 1 --calibrations held_out leave_one_out \
           --out docs/results/example_bot/example_bot_calibration.json

The model is fitted exactly as the component fits it (default config, CPU); a prediction
counts as answered when its confidence reaches FallbackClassifier's 0.4 (example_bot's).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel
from rasa_meta.training.adapt import adapt
from rasa_meta.training.corpus import load_rasa_nlu

BOT = Path(__file__).resolve().parent.parent / "example_bot"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--calibrations", nargs="+", default=["leave_one_out"],
                    help="oos_calibration values (with the inner loop on).")
    ap.add_argument("--threshold", type=float, default=0.4)
    ap.add_argument("--out", default="docs/results/example_bot/example_bot_inner_loop.json")
    ns = ap.parse_args()
    train = load_rasa_nlu(BOT / "data" / "nlu.yml")
    held_out = load_rasa_nlu(BOT / "tests" / "nlu_paraphrases.yml")
    off_topic = [ln.strip() for ln in (BOT / "tests" / "oos_messages.txt").read_text()
                 .splitlines() if ln.strip()]
    rows = []
    runs = [(e, c) for e in ns.epochs for c in (ns.calibrations if e > 0 else ["leave_one_out"])]
    for epochs, calibration in runs:
        start = time.perf_counter()
        model = FewShotIntentModel(FewShotConfig(epochs=epochs, device="cpu",
                                                 oos_calibration=calibration))
        adapt(model, train.texts, train.labels)
        seconds = time.perf_counter() - start
        probs, _, _ = model.predict(held_out.texts)
        conf, idx = probs.max(1)
        pred = [model.labels[i] for i in idx.tolist()]
        answered = [c >= ns.threshold for c in conf.tolist()]
        oos_conf = model.predict(off_topic)[0].max(1).values.tolist()
        rows.append({
            "epochs": epochs,
            "oos_calibration": calibration,
            "fit_seconds": round(seconds, 1),
            "paraphrases": len(held_out),
            "paraphrases_argmax_correct": sum(p == g for p, g in zip(pred, held_out.labels)),
            "paraphrases_answered_correct": sum(
                a and p == g for a, p, g in zip(answered, pred, held_out.labels)),
            "off_topic": len(off_topic),
            "off_topic_fallback": sum(c < ns.threshold for c in oos_conf),
        })
        print(json.dumps(rows[-1]), flush=True)
    Path(ns.out).write_text(json.dumps({
        "command": "python scripts/example_bot_check.py --epochs "
                   + " ".join(map(str, ns.epochs)) + " --calibrations " + " ".join(ns.calibrations),
        "threshold": ns.threshold, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
