"""Applications of the MILP view of networks (seed papers).

- ``minimal_adversarial``: smallest L1/L-inf perturbation reaching a target class with a
  margin (Fischetti & Jo; Aftabi et al.), solved exactly by a best-bound BaB or a full MILP.
- ``maximize_unit``: feature visualisation (Fischetti & Jo), exact with a gap.
- ``bdnn``: training binarized networks by MILP (Kurtz & Bah).
"""

from bnbver.apps.adversarial import AdversarialResult, minimal_adversarial
from bnbver.apps.visualize import UnitResult, maximize_unit

__all__ = ["AdversarialResult", "UnitResult", "maximize_unit", "minimal_adversarial"]
