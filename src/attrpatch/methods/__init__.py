"""Attribution methods over the shared graph (see `attrpatch.methods.registry` for one entry point)."""
