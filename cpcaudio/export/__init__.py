"""Deployment formats of a trained model: ONNX (``cpcaudio export``).

::

    from cpcaudio.export import export_onnx, run_onnx
    export_onnx(model, "cpc.onnx")            # encoder + context, checked against extract with onnxruntime
    context, latents = run_onnx("cpc.onnx", signal)   # signal (batch, channels, samples) float32
"""

from cpcaudio.export.onnx import DEFAULT_OPSET, OnnxExport, check_onnx, export_onnx, metadata, run_onnx

__all__ = ["DEFAULT_OPSET", "OnnxExport", "check_onnx", "export_onnx", "metadata", "run_onnx"]
