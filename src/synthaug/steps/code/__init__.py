"""Code and program methods whose data is checked by running it in the sandbox."""
