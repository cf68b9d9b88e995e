"""The cost model: latency, energy and area of CRAM-ER programs, and CPU/GPU rooflines to compare them with.

- params: the technology parameters (TOML, defaults in tech/default.toml), looked up per opcode via its unit;
- static: per-opcode counts of one inference from the linked program;
- model: latency/energy/area estimates, static (from a program) and dynamic (from a run's counts);
- roofline: MACs and bytes of an ONNX model, roofline latency/energy on CPU and GPU, onnxruntime's measured time.
"""
