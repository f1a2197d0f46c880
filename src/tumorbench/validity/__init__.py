"""The checks that say how far a number can be trusted: external test sets, Grad-CAM localisation,
the audit of the published metrics, and the statistics behind confidence intervals and tests.

It owns the external stage (`external`), the explain stage (`explain`), `audit` and `stats`. It may
import `core`, `data` and `models`; the report's wording of its results lives in `report`.
"""
