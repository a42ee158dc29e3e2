"""PyTorch checkpoint import (the authors' DIR, torchvision's ResNet-50) and reference comparison."""
