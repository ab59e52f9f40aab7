"""Evaluation: drawing samples, validation ELBO, judges (GPT-2 and n-gram), metrics, the evaluate command's
library, reports and plots."""
