"""The soundness fuzzer of issue 15 (``scripts/fuzz_soundness.py``) and its independent oracle.

Modules, and what each may import:

- ``netspec``: the generator's own description of a network and a property (numpy arrays
  holding the exact values written to ONNX); imports nothing from bnbver.
- ``exact``: exact rational arithmetic on a ``NetSpec`` (forward pass, constraint checks,
  directed rounding to float64); imports nothing from bnbver.
- ``simplex``: an exact (``fractions.Fraction``) simplex deciding feasibility of small LPs.
- ``oracle``: activation-pattern (and max-pool argmax) enumeration with one exact LP per
  pattern prefix. It shares no code with bnbver: it never imports ``bnbver``.
- ``generate``: random instances and the adversarial numerical families, with planted
  counterexamples; ``write``: the ONNX and VNN-LIB writers and the onnxruntime replay.
- ``configs`` and ``run``: the named verifier configurations and one run of bnbver through
  its public API (``load_network``, ``load_properties``, ``verify``), with the outcome class.

It lives in a sub-folder of ``scripts/`` (like ``harness``) because CI runs
``python scripts/*.py --smoke``: these modules are libraries, not entry points.
"""
