"""Counterfactual slices: the reference patient's own slice at a level, changed to another condition.

``physics`` adds a defect to the patient's slice (or removes one the request names) with the simulation's own
territory model; ``paired`` measures such slices against the truth of simulated subjects acquired with and without
their defect. The service (``base=reference``) and ``scripts/evaluate_counterfactual.py`` use them.
"""
