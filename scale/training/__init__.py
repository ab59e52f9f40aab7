"""Training: the composed trainer and its launcher, distillation objectives and rounds, ReDi couplings,
distributed set-up and EMA."""
