"""Training: flat functions (train_one_epoch, evaluate, fit), schedules, metrics, checkpoints."""
