"""The CRAM-ER language as data: grammar (cram.lark), reference and example programs.

Installed as the package ``cramc.lang`` so that the grammar and the examples ship in the wheel.
"""
