"""What a sweep and a trial are: the sweep file's models, the trial spec, constraints, metrics, baselines."""
