"""PyTorch modules of compiled models. Each takes flat arguments, so it is usable from plain PyTorch."""
