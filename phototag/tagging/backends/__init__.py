"""Runtimes for a RAM-class tagging path other than torch eager (ONNX Runtime, OpenVINO): issue 13."""
