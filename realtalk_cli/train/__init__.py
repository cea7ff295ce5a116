"""Training: the shared loop (trainer.py), one task per stage (a2e_task.py, e2f_task.py), the `train` entry (run.py)."""
