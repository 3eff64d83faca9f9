"""attrpatch: attribution-patching circuit discovery, reproducibly.

Shared method library for EAP, EAP-IG, EAP-GP, AtP/AtP*, second-order (HVP) correction and
ACDC over one graph of a TransformerLens 4 `TransformerBridge` model.
"""
__version__ = "0.1.0"
