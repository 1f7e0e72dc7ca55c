"""Reports: leaderboards, the HTML report, best-model selection, export and prediction."""
