"""Built-in tasks: the MiniLM intent classifier (the default) and a seconds-long synthetic task (tests)."""
