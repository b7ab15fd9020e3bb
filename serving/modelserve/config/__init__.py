"""Configuration of the server: where the model comes from and how it is served."""
