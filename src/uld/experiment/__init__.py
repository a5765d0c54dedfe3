"""``uld experiment paper``: the paper's comparisons on the synthetic benchmark, one command.

``plan`` names the runs and budgets, ``runner`` trains, mines hard negatives and evaluates them
(each step skipped when its output exists, interrupted training resumed), ``report`` writes
the tables shaped like the paper's Tables I-IV and the pictures.
"""
