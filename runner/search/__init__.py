"""What to try next: expansion, sub-spaces, grid / Optuna / Keras Tuner behind one base, halving, stop rules, reuse."""
