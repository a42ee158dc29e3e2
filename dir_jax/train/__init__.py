"""Training: ground truth from MANO, train state and optimizer, the jit-compiled steps, the loop."""
