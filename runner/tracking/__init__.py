"""What is recorded: the one MLflow writer (parent and child runs), the embedded store, provenance."""
