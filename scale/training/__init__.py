"""Training: the composed trainer, the run launcher, distillation objectives and rounds, ReDi couplings, distributed set-up and EMA."""
