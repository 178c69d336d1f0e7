"""Test support shipped with fastconv: the CUDA emulator (:mod:`fastconv.testing.emulator`)."""
