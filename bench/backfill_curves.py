"""Write ``curves.parquet`` for a run folder made before umsrep recorded validation curves.

    python bench/backfill_curves.py RUN_DIR

Each stage's ``train_state/last.pt`` keeps the loop's per-epoch history (validation metrics
included) but not the time at each epoch; it is estimated by spreading the stage's ``wall_s``
over its epochs in proportion to their training seconds (``epoch_s``), so validation time is
shared out evenly. Runs made since record the real time (``umsrep/runner/outputs.py``).
Then ``umsrep report RUN_DIR`` shows the time to the baseline's quality.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from umsrep.runner.outputs import validation_curve  # noqa: E402
from umsrep.schema import CURVES_COLUMNS  # noqa: E402


def stage_curve(stage_dir: Path) -> list[dict]:
    result = json.loads((stage_dir / "result.json").read_text())
    state = stage_dir / "train_state" / "last.pt"
    if result.get("curve") or not state.is_file():
        return result.get("curve") or []
    history = torch.load(state, map_location="cpu", weights_only=False)["history"]
    seconds = np.array([float(h.get("train/epoch_s", 0.0)) for h in history])
    elapsed = np.cumsum(seconds) / max(seconds.sum(), 1e-9) * float(result["wall_s"])
    return validation_curve([{**h, "elapsed_s": float(t)} for h, t in zip(history, elapsed,
                                                                          strict=True)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    args = p.parse_args(argv)
    rows = []
    for result_path in sorted((args.run_dir / "stages").glob("*/result.json")):
        result = json.loads(result_path.read_text())
        for point in stage_curve(result_path.parent):
            rows += [{"fold": int(result["fold"]), "kind": result["kind"],
                      "strategy": result["strategy"], "task": result["task"],
                      "epoch": int(point["epoch"]), "elapsed_s": float(point["elapsed_s"]),
                      "metric": key[len("val/"):], "value": float(value)}
                     for key, value in point.items() if key.startswith("val/")]
    df = pd.DataFrame(rows, columns=list(CURVES_COLUMNS)).astype(CURVES_COLUMNS)
    df.to_parquet(args.run_dir / "curves.parquet", index=False)
    print(f"{len(df)} rows from {df.groupby(['fold', 'kind', 'strategy', 'task']).ngroups} "
          f"stages -> {args.run_dir / 'curves.parquet'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
