"""Error-aware fine-tuning (`cramc finetune`).

`noise` (numpy only) states the accumulator error distribution that the
fine-tuning injects, derived from the gate-level fault model exactly as
cramc.ir.noisy does; `qat` (PyTorch) runs a float ONNX graph with
quantisation in the loop and that error injected at every MVM; `finetune`
drives the training and writes the tuned ONNX model.  Only `noise` may be
imported without PyTorch; compile and run never import this package.
"""
