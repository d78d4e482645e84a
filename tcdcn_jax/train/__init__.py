"""Training: losses (Eq. 3), task-wise early stopping (Eq. 5), the train state and step, the loop, checkpoints, transfer."""
