"""Pure tensor functions: sampling, token trees, verification. No model, no I/O."""
