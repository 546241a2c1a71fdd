"""Adapter generators: one folder each (hyper, pdiff, composer), sharing the contract in `generators/base.py`."""

from loragen.generators.base import GENERATORS, Generator, load_generator

__all__ = ["GENERATORS", "Generator", "load_generator"]
