"""The fast HTTP/1.1 engine: llhttp parsing and bytes written as they come, in front of the same pipeline."""
