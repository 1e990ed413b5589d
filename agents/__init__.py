"""MPO and TRPO learners in pure PyTorch (no I/O, no UI)."""
