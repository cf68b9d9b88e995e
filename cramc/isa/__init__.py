"""The ISA layer: opcode table, parser, canonical printer and verifier.

Nothing here imports the compiler or the simulator.
"""
