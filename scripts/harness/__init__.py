"""Shared logic of the comparison scripts (``compare_solvers``, ``compare_branching``,
``plot_tree``): instances, solver runners, the resumable CSV, tables and plots.

It lives in a sub-folder of ``scripts/`` on purpose: CI runs ``python scripts/*.py --smoke``,
and these modules are libraries, not entry points. The layering of ``bnbver/`` forbids a
``bnbver.compare`` module (it would sit above ``driver`` and ``milp`` with no home), so the
harness imports bnbver and nothing imports the harness but the scripts and their tests.
"""
