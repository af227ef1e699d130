"""DVCLive for the train stage: an epoch is a step, logged by rank 0 (see advlab.training.metrics
for the files).

In a DVC repository DVCLive also signals each step to the VS Code extension, and with a
Studio token (`dvc studio login`; DVC_STUDIO_OFFLINE=1 keeps it offline) sends every step to
DVC Studio. Here DVCLive leaves dvc.yaml and git alone (dvc.yaml declares its files: an output
folder, a metrics file, top-level params and plots) and saves no experiment of its own.
"""

from __future__ import annotations

from pathlib import Path

from dvclive import Live

from advlab.core.io import write_json
from advlab.training.loop import EpochResult, best_epoch
from advlab.training.metrics import CURVES, LIVE_FOLDER, SUMMARY


class TrainLive(Live):
    """DVCLive writing its summary to metrics/train.json atomically (advlab.core.io): its own
    make_summary rewrites FOLDER/metrics.json in place, which a kill can leave empty.

    No DVCLive resume: a new run empties the folder, and fit_resumable replays the epochs it
    restores from the checkpoint, so the files hold exactly the checkpoint's epochs and then
    the new ones (DVCLive's resume counts steps from the summary, not the checkpoint)."""

    def __init__(self, metrics: Path):
        self.summary_path = metrics / SUMMARY  # before Live.__init__, which deletes it
        super().__init__(str(metrics / LIVE_FOLDER), resume=False, report=None,
                         save_dvc_exp=False, dvcyaml=None, monitor_system=False)

    @property
    def metrics_file(self) -> str:
        return str(self.summary_path)

    def make_summary(self) -> None:
        if self.summary:  # as DVCLive's: the step once one is logged, else {} (Live.end reads it)
            self.summary["step"] = self.step
        write_json(self.summary_path, self.summary)


def epoch_curves(result: EpochResult) -> dict[str, float]:
    """An epoch's plotted values: loss, and val_acc and robust_val_acc where the run has them
    (no validation with data.val_size 0; robust validation only with train.robust_val_images)."""
    return {name: round(getattr(result, name), 6) for name in CURVES
            if getattr(result, name) is not None}


def summary_only(history: list[EpochResult], keep: str = "last") -> dict[str, float]:
    """The summary's values beyond the last epoch's: the best val_acc and robust_val_acc so far,
    and with train.keep other than last the kept epoch (what models/model.pt holds)."""
    last = history[-1]
    found: dict[str, float] = {
        f"best_{name}": round(max(getattr(r, name) for r in history), 6)
        for name in CURVES[1:] if getattr(last, name) is not None}
    if keep != "last":
        found["kept_epoch"] = best_epoch(history, keep)
    return found


def log_live_epoch(live: Live, history: list[EpochResult], extra: dict[str, object],
                   keep: str = "last") -> None:
    """The last epoch of `history` as the step of its number: its curves, and in the summary
    only the bests so far, the kept epoch and `extra` (names with `/` nest: model/params)."""
    last = history[-1]
    live.step = last.epoch
    for name, value in epoch_curves(last).items():
        live.log_metric(name, value)
    for name, value in {**summary_only(history, keep), **extra}.items():
        live.log_metric(name, value, plot=False)
    live.next_step()
