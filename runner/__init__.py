"""The runner: where and how trials run (trial execution, sweeps, scheduling, tracking, the CLI)."""
