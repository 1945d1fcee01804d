"""Cloud providers for the gpu-provisioner: the interface (base), fake (kwok-style) and azure."""
