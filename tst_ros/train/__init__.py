"""Training: the engine (optimiser, schedule, DDP, checkpoints, logging), TST-MM pre-training
runs and the linear probe. ROS-free."""
