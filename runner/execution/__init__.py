"""Processes and slots: the sweep context, run, scheduler, workers, events, notifications, the plan."""
