"""HuggingFace-style geo transformer models (configuration, modeling, Auto registration).

Arrives with the HF model issue; the package exists so that the distribution's layout is final.
"""
