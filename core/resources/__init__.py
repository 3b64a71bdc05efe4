"""GPU/host monitoring, memory estimates, method advice and run preflight. Imports nothing heavy (no torch)."""
