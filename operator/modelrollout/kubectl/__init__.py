"""`kubectl modelrollout`: the kubectl plugin that watches rollouts and sends them commands."""
