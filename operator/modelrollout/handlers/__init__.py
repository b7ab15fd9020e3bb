"""kopf handlers: decorators, validation of the body, a call into the engine. Thin."""
