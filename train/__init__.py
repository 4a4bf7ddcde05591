"""The `accelerate launch -m train` entry point, tasks, phase schedule and evaluation.

Arrives with the training issue; the package exists so that the distribution's layout is final.
"""
