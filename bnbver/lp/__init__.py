"""Linear programs as plain arrays (``model``) and the HiGHS adapter (``highs``)."""
