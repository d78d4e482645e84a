"""Photos in, points out: the Predictor, face detection, the authors' weights, export, the `tcdcn` command."""
