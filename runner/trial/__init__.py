"""One trial on one slot: training, checkpoints, latency, plots."""
