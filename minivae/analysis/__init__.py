"""What a trained model does: test-set metrics, log-likelihood, figures, reports and sweeps."""
