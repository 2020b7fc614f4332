"""The GNOME Shell "AI Efficiency" Quick Settings extension (package data) and its installer."""
