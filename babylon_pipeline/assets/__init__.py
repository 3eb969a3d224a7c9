"""Software-defined assets, one module per asset family, checks beside their asset."""
