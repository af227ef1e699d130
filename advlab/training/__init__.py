"""The train stage's logic: the fit loop, optimizer and schedule, the resumable checkpoint,
data-parallel ranks and the per-epoch metrics (DVCLive)."""
