"""Reports and cards: the evaluation report, the FLOPs-matched comparison, Hub model and dataset cards."""
