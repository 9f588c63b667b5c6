"""INT8 calibration and engine building for fallwatch (``fallwatch-calibrate``)."""
