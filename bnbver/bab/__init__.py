"""Branch and bound: nodes and the frontier, branching heuristics, the loop, parallel subtrees."""
