"""llmi's benchmarks: ``python -m bench`` runs them all; see README.md in this folder."""
