"""Attribution methods over the shared graph (see `attrpatch.attribute` for one entry point)."""
