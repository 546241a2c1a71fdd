"""Adapter generators: one folder or file each, with a common surface fit / generate / save / load."""
