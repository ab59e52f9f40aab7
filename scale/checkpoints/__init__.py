"""Checkpoints: the typed run config and state they carry, atomic run folders, torch files read safely, the
Hub, and the import of official MDLM / IMDM checkpoints."""
