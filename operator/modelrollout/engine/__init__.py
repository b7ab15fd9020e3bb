"""The framework-free core: observe -> decide (strategies) -> act."""
