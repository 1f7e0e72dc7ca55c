"""Reports: plots, leaderboards, best-model selection, export and prediction."""
