"""Built-in procedural demo scenes."""
