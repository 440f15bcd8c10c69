"""Tests of the executor engine (interface, scheduler, block manager, PyTorch engine)."""
