"""Applications of the MILP view of networks (seed papers)."""
