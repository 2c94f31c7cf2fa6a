"""The VGGT network, its named configurations and checkpoint I/O."""
