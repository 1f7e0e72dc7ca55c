"""The state every machine shares: the study storage, claims, heartbeats, and the one Optuna adapter."""
