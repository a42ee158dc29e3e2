"""Scripts that need torch (the authors' PyTorch code); run them from the repository root as `python -m tools.<name>`."""
