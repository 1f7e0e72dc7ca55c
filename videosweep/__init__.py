"""The `videosweep` command line: the one place that prints for people and turns outcomes into exit codes."""
